"""pf.onnx.load: results against onnxruntime, partitioning, dynamic dims, pf.explain,
the CLI, and typed errors naming the node. Skipped without onnx and onnxruntime."""

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

import powerfusion as pf  # noqa: E402
from powerfusion.frontend.onnx_library import LibraryStep  # noqa: E402
from powerfusion.frontend.onnx_model import Region  # noqa: E402

F32 = TP.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=21):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, elem=F32):
    return helper.make_tensor_value_info(name, elem, shape)


def _ort(model, *arrays):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, arrays)))


def _mlp_block(opset=21):
    """MatMul (library) -> bias + GELU + LayerNorm + Softmax (one region)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b")
    g = numpy_helper.from_array((1 + 0.1 * rng.standard_normal(64)).astype(np.float32), "g")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="bias"),
             helper.make_node("Gelu", ["hb"], ["act"], name="gelu", approximate="tanh"),
             helper.make_node("LayerNormalization", ["act", "g", "b"], ["ln"], name="ln",
                              epsilon=1e-5),
             helper.make_node("Softmax", ["ln"], ["y"], name="softmax", axis=-1)]
    return _model(nodes, [_vi("x", ["batch", 32])], [_vi("y", ["batch", 64])], [w, b, g],
                  opset)


def test_mixed_model_matches_onnxruntime_with_one_region():
    model = _mlp_block()
    compiled = pf.onnx.load(model)
    kinds = [type(s) for s in compiled.steps]
    assert kinds == [LibraryStep, Region]               # MatMul, then one fused region
    assert [i.op_type for i in compiled.steps[1].infos] == \
        ["Add", "Gelu", "LayerNormalization", "Softmax"]
    for batch in (3, 17):                               # dynamic dims bind per call shape
        x = np.random.default_rng(batch).standard_normal((batch, 32)).astype(np.float32)
        y = compiled(x)
        assert y.dtype == np.float32 and y.shape == (batch, 64)
        np.testing.assert_allclose(y, _ort(model, x)[0], rtol=1e-4, atol=1e-6)
    assert len(compiled.steps[1].jits) == 1          # one traced function, two shapes


def test_inputs_by_name_and_run_dict():
    model = _mlp_block()
    compiled = pf.onnx.load(model.SerializeToString())   # bytes load too
    x = np.ones((2, 32), np.float32)
    np.testing.assert_array_equal(compiled(x=x), compiled.run({"x": x})["y"])


def test_load_from_path_and_explain(tmp_path):
    path = tmp_path / "block.onnx"
    onnx.save(_mlp_block(), str(path))
    compiled = pf.onnx.load(str(path))
    x = np.ones((4, 32), np.float32)
    report = pf.explain(compiled, x)
    assert len(report.reports) == 1 and report.kernels >= 1
    assert report.global_bytes >= report.min_global_bytes > 0
    text = str(report)
    assert "region 1" in text and "library (MatMul)" in text and "matmul (MatMul)" in text
    assert "void" in report.source                       # the generated C


def test_cli_explains_an_onnx_model(tmp_path):
    path = tmp_path / "block.onnx"
    onnx.save(_mlp_block(), str(path))
    result = subprocess.run([sys.executable, "-m", "powerfusion", "explain", str(path),
                             "--dim", "batch=8"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "x: float32[8, 32]" in result.stdout
    assert "PowerFusion ONNX report: 1 region(s), 1 library step(s)" in result.stdout


def test_shape_values_computed_by_the_library_feed_a_region():
    # exported-model style: Reshape's shape comes from Shape -> Concat at run time
    batch_dim = numpy_helper.from_array(np.array([-1, 4, 8], np.int64), "tail")
    nodes = [helper.make_node("Shape", ["x"], ["s"], end=1),
             helper.make_node("Concat", ["s", "tail"], ["shape"], axis=0),
             helper.make_node("Exp", ["x"], ["e"]),
             helper.make_node("Reshape", ["e", "shape"], ["r"]),
             helper.make_node("Softmax", ["r"], ["y"], axis=-1)]
    model = _model(nodes, [_vi("x", ["n", 32])], [_vi("y", None)], [batch_dim])
    compiled = pf.onnx.load(model)
    assert any(isinstance(s, Region) and "Reshape" in [i.op_type for i in s.infos]
               for s in compiled.steps)
    for n in (2, 5):
        x = np.random.default_rng(n).standard_normal((n, 32)).astype(np.float32)
        np.testing.assert_allclose(compiled(x), _ort(model, x)[0], rtol=1e-5, atol=1e-7)


def test_reductions_opset_13_attribute_and_18_input():
    x = np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32)
    axes = numpy_helper.from_array(np.array([1, -1], np.int64), "axes")
    m13 = _model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, -1], keepdims=1)],
                 [_vi("x", [3, 4, 5])], [_vi("y", None)], opset=13)
    m18 = _model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)],
                 [_vi("x", [3, 4, 5])], [_vi("y", None)], [axes], opset=18)
    want = x.mean(axis=(1, 2))
    np.testing.assert_allclose(pf.onnx.load(m13)(x), want[:, None, None], rtol=1e-6)
    np.testing.assert_allclose(pf.onnx.load(m18)(x), want, rtol=1e-6)


def test_float16_layernorm_and_rmsnorm_against_reference():
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 48)).astype(np.float16)
    s = numpy_helper.from_array(rng.standard_normal(48).astype(np.float16), "s")
    nodes = [helper.make_node("RMSNormalization", ["x", "s"], ["r"], epsilon=1e-6),
             helper.make_node("LayerNormalization", ["r", "s"], ["y"])]
    model = _model(nodes, [_vi("x", [6, 48], TP.FLOAT16)], [_vi("y", None, TP.FLOAT16)],
                   [s], opset=23)
    y = pf.onnx.load(model)(x)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float32),
                               ReferenceEvaluator(model).run(None, {"x": x})[0]
                               .astype(np.float32), rtol=2e-3, atol=2e-3)


def test_unclaimed_ops_are_delegated():
    idx = numpy_helper.from_array(np.array([2, 0], np.int64), "idx")
    nodes = [helper.make_node("Gather", ["x", "idx"], ["g"], axis=0),
             helper.make_node("Sigmoid", ["g"], ["y"])]
    model = _model(nodes, [_vi("x", [3, 5])], [_vi("y", None)], [idx])
    x = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)
    compiled = pf.onnx.load(model)
    assert [type(s) for s in compiled.steps] == [LibraryStep, Region]
    np.testing.assert_allclose(compiled(x), 1 / (1 + np.exp(-x[[2, 0]])), rtol=1e-6)


def _weights(*shapes, seed=4):
    rng = np.random.default_rng(seed)
    return [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), f"w{k}")
            for k, s in enumerate(shapes)]


def test_interleaved_library_and_claimed_nodes_are_grouped():
    # the exporters' order: each projection's MatMul, then its bias; regrouped, two
    # projections take one sub-model call and one region instead of two of each
    w0, w1, b = _weights((16, 8), (16, 8), (8,))
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"]),
             helper.make_node("Add", ["h0", "w2"], ["a0"]),
             helper.make_node("MatMul", ["x", "w1"], ["h1"]),
             helper.make_node("Add", ["h1", "w2"], ["a1"]),
             helper.make_node("Mul", ["a0", "a1"], ["y"])]
    model = _model(nodes, [_vi("x", [4, 16])], [_vi("y", None)], [w0, w1, b])
    compiled = pf.onnx.load(model)
    assert [type(s) for s in compiled.steps] == [LibraryStep, Region]
    assert [n.op_type for n in compiled.steps[0].nodes] == ["MatMul", "MatMul"]
    x = np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(compiled(x), _ort(model, x)[0], rtol=1e-5, atol=1e-6)


def test_identity_of_a_weight_is_the_weight():
    # the legacy exporter names shared weights with Identity nodes: no region copies them
    w, b = _weights((16, 8), (8,))
    nodes = [helper.make_node("Identity", ["w1"], ["bias"]),
             helper.make_node("MatMul", ["x", "w0"], ["h"]),
             helper.make_node("Add", ["h", "bias"], ["y"])]
    model = _model(nodes, [_vi("x", [4, 16])], [_vi("y", None)], [w, b])
    compiled = pf.onnx.load(model)
    assert [type(s) for s in compiled.steps] == [LibraryStep, Region]
    assert compiled.constants["bias"] is compiled.constants["w1"]
    x = np.random.default_rng(6).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(compiled(x), _ort(model, x)[0], rtol=1e-5, atol=1e-6)


def test_nodes_out_of_order_run_in_dependency_order():
    nodes = [helper.make_node("Relu", ["h"], ["y"]), helper.make_node("Exp", ["x"], ["h"])]
    model = _model(nodes, [_vi("x", [3])], [_vi("y", None)])
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    np.testing.assert_allclose(pf.onnx.load(model)(x), np.exp(x), rtol=1e-6)


def test_openmp_threads_wait_passively_unless_told(monkeypatch):
    # kernels alternate with onnxruntime calls: spinning OpenMP threads would hold the
    # cores those calls need; a policy the user set is theirs
    import os

    monkeypatch.setenv("OMP_WAIT_POLICY", "unset")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    pf.onnx.load(_mlp_block())
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    pf.onnx.load(_mlp_block())
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    # a model PowerFusion runs whole never waits on onnxruntime: its threads may spin
    monkeypatch.delenv("OMP_WAIT_POLICY")
    nodes = [helper.make_node("Exp", ["x"], ["y"])]
    pf.onnx.load(_model(nodes, [_vi("x", [3])], [_vi("y", None)]))
    assert "OMP_WAIT_POLICY" not in os.environ


# -- errors ---------------------------------------------------------------------------------
def _relu_model():
    return _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["n", 8])],
                  [_vi("y", None)])


def test_wrong_dtype_rank_or_dims_at_call_time():
    compiled = pf.onnx.load(_relu_model())
    with pytest.raises(pf.DTypeError, match="model input 'x': expected float32, got float64"):
        compiled(np.ones((2, 8)))
    with pytest.raises(pf.ShapeError, match=r"model input 'x': expected rank 2, shape \(n, 8\)"):
        compiled(np.ones(8, np.float32))
    with pytest.raises(pf.ShapeError, match="dim 1 must be 8"):
        compiled(np.ones((2, 7), np.float32))
    with pytest.raises(pf.ShapeError, match="missing model input"):
        compiled()
    with pytest.raises(pf.ShapeError, match="has no input 'z'"):
        compiled(z=np.ones((2, 8), np.float32))


def test_a_symbolic_dim_must_agree_across_inputs():
    model = _model([helper.make_node("Add", ["a", "b"], ["y"])],
                   [_vi("a", ["n", 4]), _vi("b", ["n", 4])], [_vi("y", None)])
    with pytest.raises(pf.ShapeError, match="'n' is 3 in input 'a'"):
        pf.onnx.load(model)(np.ones((3, 4), np.float32), np.ones((2, 4), np.float32))


def test_bad_attribute_names_the_node():
    model = _model([helper.make_node("Gelu", ["x"], ["y"], name="act", approximate="erf")],
                   [_vi("x", [2, 3])], [_vi("y", None)], opset=20)
    with pytest.raises(pf.UnsupportedError, match=r"node 'act' \(Gelu\).*approximate='erf'"):
        pf.onnx.load(model)(np.ones((2, 3), np.float32))


def test_bad_reshape_names_the_node():
    shape = numpy_helper.from_array(np.array([5, -1], np.int64), "shape")
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="r")],
                   [_vi("x", [2, 3])], [_vi("y", None)], [shape])
    with pytest.raises(pf.ShapeError, match=r"node 'r' \(Reshape\): cannot reshape"):
        pf.onnx.load(model)(np.ones((2, 3), np.float32))


def test_bad_group_count_names_the_node():
    s = numpy_helper.from_array(np.ones(3, np.float32), "s")
    model = _model([helper.make_node("GroupNormalization", ["x", "s", "s"], ["y"],
                                     name="gn", num_groups=2)],
                   [_vi("x", [1, 3, 4])], [_vi("y", None)], [s], opset=21)
    with pytest.raises(pf.ShapeError, match=r"node 'gn' \(GroupNormalization\): attribute "
                                            r"num_groups=2: expected a positive divisor"):
        pf.onnx.load(model)(np.ones((1, 3, 4), np.float32))


def test_unknown_op_is_delegated_and_fails_typed():
    model = _model([helper.make_node("Exp", ["x"], ["e"]),
                    helper.make_node("Frobnicate", ["e"], ["y"], name="mystery",
                                     domain="example.custom")],
                   [_vi("x", [2])], [_vi("y", None)])
    model.opset_import.append(helper.make_opsetid("example.custom", 1))
    compiled = pf.onnx.load(model)
    assert isinstance(compiled.steps[-1], LibraryStep)
    with pytest.raises(pf.UnsupportedError, match=r"mystery \(Frobnicate\): neither "
                                                  "onnxruntime"):
        compiled(np.ones(2, np.float32))


def test_a_cycle_names_a_node():
    nodes = [helper.make_node("Add", ["x", "z"], ["y"], name="add"),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]
    model = _model(nodes, [_vi("x", [3])], [_vi("y", None)])
    with pytest.raises(pf.UnsupportedError, match=r"node 'add' \(Add\).*has a cycle"):
        pf.onnx.load(model)


def test_load_rejects_what_is_not_a_model(tmp_path):
    with pytest.raises(pf.UnsupportedError, match="no such file"):
        pf.onnx.load(str(tmp_path / "missing.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf\xff" * 3)
    with pytest.raises(pf.UnsupportedError, match="is not an ONNX model"):
        pf.onnx.load(str(bad))
    with pytest.raises(pf.UnsupportedError, match="expects a path"):
        pf.onnx.load(42)


def test_import_powerfusion_without_onnx():
    code = ("import sys; sys.modules['onnx'] = None\n"
            "import powerfusion as pf\n"
            "try:\n    pf.onnx.load('m.onnx')\n"
            "except pf.UnsupportedError as e:\n    print('typed:', e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "typed: pf.onnx needs the onnx package" in result.stdout
