"""Hugging Face models exported by torch.onnx.export, run by pf.onnx.load and checked
against onnxruntime: tiny BERT, GPT-2 and LLaMA (one layer, hidden 64), random weights
from configs, exported into a temporary folder. The legacy (TorchScript) exporter always;
the dynamo exporter where onnxscript is installed. Skipped without transformers."""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import powerfusion as pf  # noqa: E402
from powerfusion.frontend.onnx_model import Region  # noqa: E402

SEQ = 8


def _tiny(name: str):
    common = {"num_hidden_layers": 1, "vocab_size": 100, "max_position_embeddings": 32,
              "attn_implementation": "eager"}
    if name == "bert":
        return transformers.BertModel(transformers.BertConfig(
            hidden_size=64, num_attention_heads=4, intermediate_size=128, **common))
    if name == "gpt2":
        return transformers.GPT2Model(transformers.GPT2Config(
            n_embd=64, n_head=4, n_layer=1, n_positions=32, vocab_size=100,
            attn_implementation="eager", use_cache=False))
    return transformers.LlamaModel(transformers.LlamaConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=176,
        use_cache=False, **common))


class _LastHidden(torch.nn.Module):
    """input_ids and attention_mask in, last hidden state out: the mask as an input keeps
    transformers' packed-sequence check (aten::diff, no ONNX symbolic) out of the trace."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _export(name: str, exporter: str, path) -> torch.nn.Module:
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (1, SEQ))
    # eval() on the wrapper: the legacy exporter restores its mode on every submodule
    model = _LastHidden(_tiny(name)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # the exporters' deprecation notes
        torch.onnx.export(model, (ids, torch.ones_like(ids)),
                          str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["hidden"], dynamo=exporter == "dynamo",
                          **({"opset_version": 18} if exporter == "legacy" else {}))
    return model


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_exported_model_matches_onnxruntime(name, exporter, tmp_path):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    path = tmp_path / f"{name}.onnx"
    module = _export(name, exporter, path)
    model = pf.onnx.load(str(path))
    regions = [s for s in model.steps if isinstance(s, Region)]
    claimed = {i.op_type for r in regions for i in r.infos}
    # the memory-bound part is PowerFusion's: softmax, and the norms (fused or as ops)
    assert "Softmax" in claimed and claimed & {"LayerNormalization", "ReduceMean"}
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (1, SEQ)).astype(np.int64)
    mask = np.ones((1, SEQ), np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    got = model(ids, mask)
    assert got.shape == want.shape == (1, SEQ, 64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():                          # and the export is the model
        eager = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-5)
