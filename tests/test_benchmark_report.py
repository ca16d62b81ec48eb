"""benchmarks/: targets from partial results (a run cut short or a section that failed),
their equal-work bounds, per-round speedups, each contender's chunk size, the markdown table
(GPU memory included), merging rerun sections, and the op-time profile."""
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import report  # noqa: E402

MACHINE = {"cpu": "test cpu", "cores": 2, "jax_device": "cpu:0", "torch_threads": 2,
           "versions": {"jax": "x", "jaxlib": "x", "flax": "x", "torch": None, "numpy": "x"},
           "load_average_at_start": 0.0}


def _cert(model, speedup, fraction):
    return {"model": model, "samples": 10, "chunk": 5, "ours_samples_per_s": 2.0,
            "torch_nchw_samples_per_s": 1.0, "torch_channels_last_samples_per_s": 1.0,
            "speedup_vs_best_torch": speedup, "flops_per_sample": 1.0,
            "xla_flops_per_sample_with_rng": 2.0, "achieved_gflops": 1.0, "matmul_gflops": 2.0,
            "fraction_of_matmul_rate": fraction}


def _markdown(certification, errors=()) -> str:
    """RESULTS.md of a quick run that measured `certification` rows only."""
    results = {"date": "d", "quick": True, "sizes": "quick", "command": "c", "machine": MACHINE,
               "certification": certification, "errors": list(errors)}
    results["targets"] = report.targets(results)
    return report.markdown(results)


def test_targets_take_the_worst_model_and_skip_what_was_not_measured():
    results = {"certification": [_cert("a", 3.5, 0.6), _cert("b", 1.9, 0.7)]}
    rows = {r["target"]: r for r in report.targets(results)}
    assert set(rows) == {"certification >= 2x torch"}  # a CPU run: the CPU's targets
    assert rows["certification >= 2x torch"] == {"target": "certification >= 2x torch",
                                                 "value": 1.9, "met": False}


def test_targets_are_per_device():
    gpu = {"machine": {"jax_backend": "gpu"}, "certification": [_cert("a", 2.9, 0.1)],
           "resnet_certify": {"seconds": 0.8}}
    rows = {r["target"]: r for r in report.targets(gpu)}
    assert rows["certification >= 3x torch"]["met"] is False
    assert rows["ResNet-18 32x32x3 certified at n = 100,000 in <= 1 s"]["met"] is True
    cpu = {"machine": {"jax_backend": "cpu"}, "certification": [_cert("a", 2.9, 0.1)]}
    rows = {r["target"]: r for r in report.targets(cpu)}
    assert rows["certification >= 2x torch"]["met"] is True
    assert not any("ResNet-18" in name for name in rows)


def test_bounds_say_whether_a_target_is_reachable_from_the_worst_model():
    a, b = _cert("a", 1.6, 0.2), _cert("b", 1.5, 0.4)
    a.update(bound_vs_best_torch=1.9, fraction_bound=0.25, rng_bound_vs_best_torch=1.9,
             flop_bound_vs_best_torch=9.0, normals_only_samples_per_s=3.0,
             fraction_of_rng_bound=1.6 / 1.9)
    b.update(bound_vs_best_torch=3.4, fraction_bound=0.6, rng_bound_vs_best_torch=3.4,
             flop_bound_vs_best_torch=3.5, normals_only_samples_per_s=4.0,
             fraction_of_rng_bound=1.5 / 3.4)
    rows = {r["target"]: r for r in report.targets({"certification": [a, b]})}
    assert rows["certification >= 2x torch"]["bound"] == 1.9
    assert rows["certification >= 2x torch"]["reachable"] is False
    # Reported with no target: the worst model's fraction of its own RNG bound.
    assert rows["fraction of the RNG bound reached"] == {
        "target": "fraction of the RNG bound reached", "value": 1.5 / 3.4}
    b["bound_vs_best_torch"] = 1.95
    a["bound_vs_best_torch"] = 3.1
    rows = {r["target"]: r for r in report.targets({"certification": [a, b]})}
    assert rows["certification >= 2x torch"]["reachable"] is False  # b's bound is the worst
    b["bound_vs_best_torch"] = 2.05
    rows = {r["target"]: r for r in report.targets({"certification": [a, b]})}
    assert rows["certification >= 2x torch"]["reachable"] is True
    # A row from a run before the bounds were measured: no bound is claimed.
    rows = {r["target"]: r for r in report.targets({"certification": [a, _cert("c", 2.0, 0.1)]})}
    assert "bound" not in rows["certification >= 2x torch"]
    assert "fraction of the RNG bound reached" not in rows
    text = _markdown([a, _cert("c", 2.0, 0.1)])
    assert "| a | 10 | 5 | - | 2 | 1 | 1 | 1.60 | - | - | - | - | - | 3 | 1.90 | 0.84 | 9.00 | - | - |" in text
    assert "| c | 10 | 5 | - | 2 | 1 | 1 | 2.00 |" + " - |" * 11 in text
    assert "| certification >= 2x torch | 1.6 | False | - | - |" in text


def test_speedup_takes_each_ratio_within_one_round():
    import common
    rounds = {"ours": [1.0, 2.0, 1.0], "t1": [3.0, 3.0, 9.0], "t2": [4.0, 2.5, 2.0]}
    # Round by round: best torch 3.0 / 1.0, 2.5 / 2.0, 2.0 / 1.0.
    assert common.speedup(rounds, "ours", ("t1", "t2")) == (2.0, 1.25, 3.0)
    assert common.medians(rounds) == {"ours": 1.0, "t1": 3.0, "t2": 2.5}
    calls = []
    rounds = common.timed_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # one warm-up each, then interleaved
    assert [len(t) for t in rounds.values()] == [2, 2]
    row = dict(_cert("a", 2.0, 0.1), speedup_range=[1.5, 2.25])
    assert "| a | 10 | 5 | - | 2 | 1 | 1 | 2.00 | 1.50-2.25 |" in _markdown([row])


def test_markdown_shows_each_contenders_batch_size_and_the_sweep():
    row = dict(_cert("a", 2.0, 0.1), chunk=1000, torch_nchw_chunk=250, torch_channels_last_chunk=500,
               chunk_sweep=[{"contender": "ours", "250": 10.0, "500": 11.0, "1000": 12.0},
                            {"contender": "torch_nchw", "250": 7.0, "1000": 5.0}])
    text = _markdown([row])
    assert "| a | 10 | 1000 | 250 / 500 | 2 |" in text
    assert "| model | contender | 250 | 500 | 1000 |" in text
    assert "| a | ours | 10 | 11 | 12 |" in text
    assert "| model | contender | 250 | 1000 |" in text  # another set of sizes: its own table
    assert "| a | torch_nchw | 7 | 5 |" in text


def test_each_contender_gets_its_own_fastest_chunk(monkeypatch):
    import common
    seconds = {("ours", 250): 2.0, ("ours", 1000): 1.0, ("torch", 250): 3.0, ("torch", 1000): 4.0}
    seen = {}

    def fake_interleaved(contenders, repeats):
        seen.update(contenders)
        return {key: seconds[key] for key in contenders}

    monkeypatch.setattr(common, "interleaved", fake_interleaved)
    thunks = {label: {c: object() for c in (250, 1000)} for label in ("ours", "torch")}
    best, rates = common.best_chunks(thunks, num=1000)
    assert best == {"ours": 1000, "torch": 250}
    assert rates == {"ours": {250: 500.0, 1000: 1000.0}, "torch": {250: 1000 / 3, 1000: 250.0}}
    assert seen[("torch", 250)] is thunks["torch"][250]


@pytest.mark.slow
def test_normals_only_pass_draws_the_models_normals():
    import bench_profile
    import common
    import jax
    import jax.numpy as jnp

    from hycas_jax import functional
    config, _, _, _, model = common.jax_model("small_cnn 28x28x1")
    logits_fn, params = functional(model)
    image = jnp.asarray(common.images(config.model.image_shape, 1))
    draws = bench_profile.draw_shapes(logits_fn, params, image)
    assert draws[0] == (image.shape, "normal")  # the input noise: exact normals
    # One value per feature of every RANI, in the model's 16-bit form: far more than the pixels.
    # The only other draws are RPFAN's random filters (exact normals, kernel-shaped, few).
    rani = [s for s, form in draws[1:] if form == "quantile16"]
    others = [(s, form) for s, form in draws[1:] if form != "quantile16"]
    assert all(s[0] == image.shape[0] for s in rani)
    assert others and all(form == "normal" and s[:2] == (3, 3) for s, form in others)
    assert sum(math.prod(s) for s in rani) > 30 * sum(math.prod(s) for s, _ in others)
    assert sum(math.prod(s) for s, _ in draws) > 20 * image.size
    keys = jax.random.split(jax.random.key(0), 3)
    ours = bench_profile.normals_only(draws)(keys)
    by_jax = bench_profile.normals_only(draws, jax.random.normal)(keys)
    assert [a.shape for a in ours] == [(3, *s) for s, _ in draws]
    for a, b in zip(ours, by_jax):  # rng.normal equals jax.random.normal bit for bit
        assert jnp.array_equal(a, b)


def test_memory_target_uses_the_accelerator_peak_when_there_is_one():
    memory = {"peak_rss_mb": 3000.0, "peak_device_mb": 1024.0, "certify_compile_s": 30.0}
    rows = {r["target"]: r for r in report.targets({"memory": memory})}
    assert rows["peak memory < 2 GB certifying one image"]["value"] == 1.0
    assert rows["peak memory < 2 GB certifying one image"]["met"] is True
    assert rows["certify compile < 20 s"]["met"] is False
    memory["peak_device_mb"] = None  # CPU: the process's RSS
    rows = {r["target"]: r for r in report.targets({"memory": memory})}
    assert rows["peak memory < 2 GB certifying one image"]["met"] is False


def test_markdown_of_a_partial_run_names_the_failed_section():
    text = _markdown([_cert("a", 3.5, 0.6)], [{"section": "training", "error": "RuntimeError: boom"}])
    assert "**Section failed: training**: `RuntimeError: boom`" in text
    assert "| a | 10 | 5 | - | 2 | 1 | 1 | 3.50 |" in text
    assert "## 2. Training" in text


def test_a_rerun_replaces_only_the_rows_it_measured_again():
    results = {"certification": [_cert("a", 2.0, 0.1), _cert("b", 2.5, 0.2)],
               "agreement": [{"model": "a", "image": 0, "x": 1}, {"model": "a", "image": 1, "x": 1}],
               "memory": {"peak_rss_mb": 1.0}}
    report.merge(results, "certification", [_cert("a", 3.1, 0.3)])
    assert [(r["model"], r["speedup_vs_best_torch"]) for r in results["certification"]] == [
        ("b", 2.5), ("a", 3.1)]
    report.merge(results, "agreement", [{"model": "a", "image": 1, "x": 2}])
    assert [(r["image"], r["x"]) for r in results["agreement"]] == [(0, 1), (1, 2)]
    report.merge(results, "memory", {"peak_rss_mb": 2.0})
    assert results["memory"] == {"peak_rss_mb": 2.0}
    report.merge(results, "attacks", [{"model": "t"}])  # a key not there yet
    assert results["attacks"] == [{"model": "t"}]


def test_scope_of_keeps_the_named_scopes_only():
    import bench_profile
    assert bench_profile.scope_of(
        "jit(_monte_carlo)/while/body/closed_call/vmap(unit1)/fdpan/lowpass/"
        "gh,bhwc,vw->bgvc/dot_general") == "unit1/fdpan/lowpass"
    assert bench_profile.scope_of("jit(run)/vmap(input_noise)/mul") == "input_noise"
    assert bench_profile.scope_of("jit(run)/vmap()/SmallCNN.features/while/body/add") == "(unscoped)"


@pytest.mark.slow
def test_op_times_attributes_the_certification_pass_to_model_components():
    import bench_profile
    r = bench_profile.op_times("small_cnn 28x28x1", chunk=16, rounds=2, repeats=1)
    shares = {row["component"]: row["share"] for row in r["by_component"]}
    assert sum(shares.values()) == pytest.approx(1.0)
    # The model's own components hold nearly all of the time, each one present.
    assert {"rani", "snc", "lowpass", "depthwise", "activation", "input_noise"} <= set(shares)
    assert shares.get("(unscoped)", 0.0) < 0.2
    assert r["op_ms_per_chunk"] > 0 and r["ops"] > 10
