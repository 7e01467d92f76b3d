"""The schedule knobs of the CPU search space, the learned correction and the tuner's
budget: each knob is data of the candidate, changes the code, keeps the result, and is
kept by the tuning database; the correction learns and falls back; the tuner measures
no more than it is asked to."""

import dataclasses
import json
import math

import numpy as np
import pytest

import powerfusion as pf
from powerfusion.frontend.tracing import trace
from powerfusion.runtime.backends import executable, get_target, printed
from powerfusion.search import learned, tuner, tuning_db
from powerfusion.search.plan import Candidate
from powerfusion.search.space import candidate_plans, knob_values, plan_graph


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def bias_gelu(x, b):
    h = x + b
    return 0.5 * h * (1.0 + np.tanh(0.7978845608028654 * (h + 0.044715 * h ** 3)))


def layernorm(x, w):
    mu = x.mean(-1, keepdims=True)
    d = x - mu
    return d / np.sqrt((d * d).mean(-1, keepdims=True) + 1e-5) * w


RNG = np.random.default_rng(0)
KERNELS = {     # big enough that the parallel loop runs threaded (work > 32768)
    "softmax": (softmax, (RNG.standard_normal((256, 512), dtype=np.float32),)),
    "bias_gelu": (bias_gelu, (RNG.standard_normal((512, 384), dtype=np.float32),
                              RNG.standard_normal(384, dtype=np.float32))),
    "layernorm": (layernorm, (RNG.standard_normal((192, 768), dtype=np.float32),
                              RNG.standard_normal(768, dtype=np.float32))),
}


def _strides(args):
    return [tuple(s // a.itemsize for s in a.strides) for a in args]


def _space(name):
    fn, args = KERNELS[name]
    graph, _ = trace(fn, args)
    return graph, args, tuner.search_space(graph, _strides(args), get_target("cpu"), "cpu")


def test_the_cpu_space_holds_every_knob_with_its_default_first():
    knobs = knob_values(get_target("cpu"))
    assert set(knobs) == {"recompute", "streaming", "tile", "threads", "dynamic",
                          "vector_bits", "interleave"}
    assert all(values[0] in (False, 1.0, 0, None) for values in knobs.values())
    assert all(len(values) >= 2 for name, values in knobs.items()
               if name != "threads" or get_target("cpu").cores > 1)
    _, _, space = _space("bias_gelu")
    found = {c for c, *_ in space.points}
    for knob, values in knobs.items():
        # recomputing is a point only where canonical form stores (test_broadcast_store);
        # interleaving only where rows are reduced (below)
        assert {getattr(c, knob) for c in found} == set(
            values[:1] if knob in ("recompute", "interleave") else values), knob
    # softmax's rows interleaved are points of their own, beside the rows one at a time
    # (what the cost model picks, None, where it does the same as one of them)
    _, _, space = _space("softmax")
    assert None in {c.interleave for c, *_ in space.points}
    assert {any(ck.interleaved for ck in plan.kernels) for _, plan, *_ in space.points} \
        == {False, True}


def test_each_knob_changes_the_generated_code():
    fn, args = KERNELS["bias_gelu"]
    graph, _ = trace(fn, args)
    target = get_target("cpu")
    (plan,) = [p for c, p, _ in candidate_plans(graph, _strides(args), target)]
    default = printed(plan, "cpu").source
    expected = {"threads": (1, "num_threads(1)"), "dynamic": (4, "schedule(dynamic, "),
                "vector_bits": (128, 'prefer-vector-width=128'),
                "tile": (0.25, None), "streaming": (True, "pf_stream_f32(")}
    for knob, (value, text) in expected.items():
        choice = dataclasses.replace(Candidate(), **{knob: value})
        planned = plan_graph(graph, _strides(args), target, choice)
        assert planned.choice == choice
        source = printed(planned, "cpu").source
        assert source != default, knob
        assert text is None or (text in source and text not in default), knob
    tiled = plan_graph(graph, _strides(args), target, Candidate(tile=0.25))
    assert tiled.kernels[0].schedule.tile * 4 == plan.kernels[0].schedule.tile


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_point_of_the_space_matches_numpy(name):
    fn, args = KERNELS[name]
    graph, args, space = _space(name)
    expected = fn(*[a.astype(np.float64) for a in args])
    assert len(space.points) >= 16
    for candidate, plan, _, code in space.points:
        (got,) = executable(plan, "cpu", code).run(args)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6,
                                   err_msg=candidate.label)


def test_the_database_keeps_the_knobs_and_reads_entries_without_them(tmp_path, monkeypatch):
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    knobbed = Candidate("online softmax", "global", True, 0.25, 1, 4, 128, interleave=True)
    tuning_db.record("cpu", "new", {"choice": knobbed, "model_choice": Candidate()})
    assert tuning_db.load("cpu")["new"]["choice"] == knobbed
    path = tuning_db.db_path("cpu")
    stored = json.loads(path.read_text())
    stored["old"] = {"choice": {"computation": "as written", "placement": "local",
                                "streaming": True}}
    stored["bad"] = {"choice": {"computation": "as written", "placement": "local",
                                "streaming": False, "threads": "two"}}
    plain = {"computation": "as written", "placement": "local", "streaming": False}
    stored["unset"] = {"choice": {**plain, "interleave": None}}
    stored["no tile"] = {"choice": {**plain, "tile": None}}          # only a switch is None
    stored["int switch"] = {"choice": {**plain, "interleave": 1}}   # a switch is a bool
    path.write_text(json.dumps(stored))
    entries = tuning_db.load("cpu")
    assert entries["old"]["choice"] == Candidate(streaming=True)
    assert entries["unset"]["choice"] == Candidate()
    assert not {"bad", "no tile", "int switch"} & set(entries)
    assert knobbed.label == ("online softmax, rows global, streaming stores, tile /4, "
                             "1 thread, dynamic x4, rows interleaved, 128-bit vectors")


def test_a_recorded_winner_with_knobs_is_what_a_later_run_compiles(tmp_path, monkeypatch):
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    fn, args = KERNELS["softmax"]
    _, _, space = _space("softmax")
    winner = Candidate(threads=1, dynamic=4)
    tuning_db.record("cpu", space.key, {"choice": winner})
    later = pf.jit(fn)
    np.testing.assert_allclose(later(*args), fn(*[a.astype(np.float64) for a in args]),
                               rtol=2e-5, atol=2e-6)
    (compiled,) = later.cache.values()
    assert compiled.executable.plan.choice == winner
    assert "num_threads(1)" in compiled.executable.source


def _synthetic(groups: int, seed: int = 0):
    """Kernels whose candidates' time is the estimate times a knob effect: one thread
    halves a small kernel's time and doubles a big one's; narrow vectors cost 20%."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(groups):
        units = float(rng.integers(4, 20))
        for threads in (0.5, 1.0):
            for narrow in (0.5, 1.0):
                for streaming in (0.0, 1.0):
                    f = {name: 0.0 for name in learned.FEATURES}
                    f.update(log_estimate=math.log(1e-3), log_units=units, threads=threads,
                             narrow=narrow, streaming=streaming)
                    effect = (-0.7 if units < 12 else 0.7) * (threads == 0.5) \
                        + 0.2 * (narrow == 0.5)
                    rows.append((f"k{g}", f, 1e-3 * math.exp(effect + rng.normal(0, 0.02))))
    return rows


def _favouring(feature: str, values: tuple[float, ...]):
    """Kernels measured elsewhere where one feature's first value was the fastest, each
    next one slower."""
    rows = []
    for g in range(10):
        for k, value in enumerate(values):
            f = {name: 0.0 for name in learned.FEATURES}
            f.update(log_estimate=math.log(1e-3), **{feature: value})
            rows.append((f"k{g}", f, 1e-3 * (1 + k)))
    return rows


def test_the_correction_learns_a_synthetic_effect_and_ranks_held_out_kernels():
    rows = _synthetic(30)
    held_out = _synthetic(6, seed=1)
    model = learned.Correction().fit(rows)
    assert model.trained
    for g in {r[0] for r in held_out}:
        group = [r for r in held_out if r[0] == g]
        first = model.rank([r[1] for r in group])[0]      # streaming is a tie: noise
        assert group[first][2] <= 1.1 * min(r[2] for r in group)


def test_with_no_measurements_the_cost_model_ranking_stands(tmp_path, monkeypatch):
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    model = learned.Correction.from_db("cpu")
    assert not model.trained
    assert not learned.Correction().fit(_synthetic(3)[:1]).trained   # one point: no contrast
    _, _, space = _space("softmax")
    assert model.rank(space.features) == list(range(len(space.points)))
    assert not model.predict(space.features).any()
    assert space.shortlist(model, 1) == [space.untuned] and space.untuned in space.defaults



def test_each_computation_and_placement_is_measured_first_at_the_knobs_defaults():
    """The correction learns the knobs from other kernels; which computation and
    placement win is this kernel's question (the cost model's part): each is measured
    at the knobs' defaults first, even where the correction favours a knob everywhere
    (column_sum's split columns were once measured only with narrow vectors, 6-9%
    behind the best)."""
    correction = learned.Correction().fit(_favouring("narrow", (0.25, 0.5, 1.0)))
    _, _, space = _space("layernorm")
    assert space.points[correction.rank(space.features)[0]][0].vector_bits
    kinds = {}
    for k in space.defaults:
        c = space.points[k][0]
        kinds[(c.computation, c.placement, c.recompute)] = k
    assert len(kinds) >= 2 and space.untuned in kinds.values()
    first = space.shortlist(correction, len(kinds))
    assert sorted(first) == sorted(kinds.values())
    assert all(not space.points[k][0].vector_bits for k in first)
    # past them, the corrected ranking: narrow vectors next
    assert space.points[space.shortlist(correction, len(kinds) + 1)[-1]][0].vector_bits

@pytest.mark.parametrize("trained", [False, True])
def test_the_tuner_measures_at_most_what_it_is_asked(tmp_path, monkeypatch, trained):
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    fn, args = KERNELS["layernorm"]
    graph, _ = trace(fn, args)
    correction = learned.Correction().fit(_synthetic(10)) if trained else None
    result = tuner.tune(graph, _strides(args), get_target("cpu"), args, top=3, repeat=2,
                        progress=False, correction=correction)
    assert 1 <= len(result.seconds) <= 3 and result.space >= 16
    (entry,) = tuning_db.load("cpu").values()
    assert len(entry["measured"]) == len(result.seconds) and entry["space"] == result.space
    assert all(set(m["features"]) == set(learned.FEATURES) for m in entry["measured"])
    # what the tuner recorded trains the next correction
    assert learned.Correction.from_db("cpu").trained == (len(result.seconds) > 1)


def test_past_its_budget_the_tuner_still_measures_the_untuned_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    graph, args, space = _space("layernorm")
    correction = learned.Correction().fit(_favouring("global_rows", (1.0, 0.0)))
    assert space.shortlist(correction, 3)[0] != space.untuned     # not the first anyway
    result = tuner.tune(graph, _strides(args), get_target("cpu"), args, top=3, repeat=2,
                        budget_s=0.0, progress=False, correction=correction)
    assert set(result.seconds) == {space.points[space.shortlist(correction, 3)[0]][0],
                                   space.points[space.untuned][0]}


def test_the_fastest_few_are_timed_again_and_the_second_round_decides(tmp_path, monkeypatch):
    """One short round on a shared machine misorders candidates: its fastest three (not
    one it put far behind, unless it is the untuned plan) are timed again with long
    samples, and that round picks."""
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    rounds = []

    def timed(runs, repeats, **options):
        rounds.append((list(runs), repeats, options))
        names = list(runs)
        if len(rounds) == 1:        # in shortlist order, each 10% slower; the last far behind
            return {c: [1e-3 * (1 + 0.1 * k) if k < len(names) - 1 else 1e-2]
                    for k, c in enumerate(names)}
        return {c: [1e-3 * (2 - 0.1 * k) if k < 3 else 3e-3]                # reversed;
                for k, c in enumerate(names)}                    # the untuned plan last

    monkeypatch.setattr(tuner, "interleaved", timed)
    fn, args = KERNELS["layernorm"]
    graph, _ = trace(fn, args)
    result = tuner.tune(graph, _strides(args), get_target("cpu"), args, top=5, repeat=2,
                        progress=False, correction=learned.Correction().fit(_synthetic(10)))
    (first, _, _), (again, repeats, options) = rounds
    space = tuner.search_space(graph, _strides(args), get_target("cpu"), "cpu")
    untuned = space.points[space.untuned][0]
    assert len(first) == 5 and untuned in first      # what tuning must beat is measured
    # the fastest three, and the untuned plan whatever its first round
    assert again == first[:3] + ([untuned] if untuned not in first[:3] else [])
    assert repeats > 2 and options["min_sample_s"] > 2e-3
    assert result.choice == first[2] == min(result.confirmed, key=result.confirmed.get)
    assert set(result.confirmed) == set(again) and len(result.seconds) == 5
    (entry,) = tuning_db.load("cpu").values()
    assert entry["choice"] == first[2] and set(entry["confirmed"]) == {c.label for c in again}


def test_every_candidate_the_tuner_times_writes_the_same_memory(tmp_path, monkeypatch):
    """Each candidate with outputs of its own would time the caches as much as the
    kernel (the round's first has them to itself, the rest evict the others' outputs):
    the candidates share one set of arrays."""
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path))
    written = {}

    def timed(runs, repeats, **options):
        for candidate, run in runs.items():
            written[candidate] = run()[0].__array_interface__["data"][0]
        return {c: [1e-3] for c in runs}

    monkeypatch.setattr(tuner, "interleaved", timed)
    fn, args = KERNELS["layernorm"]
    graph, _ = trace(fn, args)
    tuner.tune(graph, _strides(args), get_target("cpu"), args, top=5, repeat=2,
               progress=False, correction=learned.Correction().fit(_synthetic(10)))
    assert len(written) == 5 and len(set(written.values())) == 1


def test_the_search_space_benchmark_judges_the_tuned_choice_against_the_best(tmp_path,
                                                                              monkeypatch):
    """benchmarks/search_space.py on quick shapes: each case tuned with a correction
    trained on the other, judged head to head (and the tuned choice timed once more
    against the best known point, the two alone); every point checked against numpy."""
    monkeypatch.setenv("POWERFUSION_CACHE_DIR", str(tmp_path / "cache"))
    from benchmarks import search_space

    assert search_space.main(["--quick", "--cases", "rmsnorm,layernorm_bf16", "--repeats", "1",
                              "--out", str(tmp_path), "--name", "ss"]) == 0
    data = json.loads((tmp_path / "ss.json").read_text())
    assert [r["case"] for r in data["results"]] == ["rmsnorm", "layernorm_bf16"]
    for r in data["results"]:
        assert r["wrong"] == [] and 1 <= r["measured"] <= max(1, r["space"] // 5)
        h2h = r["head_to_head"]
        assert h2h["tuned_vs_best"] > 0 and h2h["tuned_vs_best_of_seven"] >= 1.0
        assert (h2h["tuned_vs_best"] == 1.0) == (h2h["best"] == r["tuned"])
    assert "head to head" in (tmp_path / "ss.md").read_text()
