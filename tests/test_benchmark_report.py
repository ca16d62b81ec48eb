"""benchmarks/: targets from partial results (a run cut short or a section that failed),
the markdown table (GPU memory included), merging rerun sections, and the op-time profile."""
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


def test_targets_take_the_worst_model_and_skip_what_was_not_measured():
    results = {"certification": [_cert("a", 3.5, 0.6), _cert("b", 2.0, 0.7)]}
    rows = {r["target"]: r for r in report.targets(results)}
    assert set(rows) == {"certification >= 3x torch", "certification >= 50% of matmul FLOP rate"}
    assert rows["certification >= 3x torch"] == {"target": "certification >= 3x torch",
                                                 "value": 2.0, "met": False}
    assert rows["certification >= 50% of matmul FLOP rate"]["met"] is True


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
    results = {"date": "d", "quick": True, "sizes": "quick", "command": "c", "machine": MACHINE,
               "certification": [_cert("a", 3.5, 0.6)],
               "errors": [{"section": "training", "error": "RuntimeError: boom"}]}
    results["targets"] = report.targets(results)
    text = report.markdown(results)
    assert "**Section failed: training**: `RuntimeError: boom`" in text
    assert "| a | 10 | 5 | 2 | 1 | 1 | 3.50 |" in text
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


def test_op_times_attributes_the_certification_pass_to_model_components():
    import bench_profile
    r = bench_profile.op_times("small_cnn 28x28x1", chunk=16, rounds=2, repeats=1)
    shares = {row["component"]: row["share"] for row in r["by_component"]}
    assert sum(shares.values()) == pytest.approx(1.0)
    # The model's own components hold nearly all of the time, each one present.
    assert {"rani", "snc", "lowpass", "depthwise", "activation", "input_noise"} <= set(shares)
    assert shares.get("(unscoped)", 0.0) < 0.2
    assert r["op_ms_per_chunk"] > 0 and r["ops"] > 10
