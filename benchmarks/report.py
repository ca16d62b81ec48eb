"""Targets of issue 7 checked against results, and the RESULTS.md table."""
from __future__ import annotations

TARGETS = (  # name, results key, threshold, higher is better
    ("certification >= 3x torch", "certification_speedup", 3.0, True),
    ("training step >= 1.0x torch", "training_speedup", 1.0, True),
    ("certification >= 50% of matmul FLOP rate", "fraction_of_matmul_rate", 0.5, True),
    ("peak memory < 2 GB certifying one image", "peak_rss_gb", 2.0, False),
    ("certify compile < 20 s", "certify_compile_s", 20.0, False),
)


def targets(results: dict) -> list:
    """Worst case over models of each targeted quantity, and whether it meets the target."""
    value = {
        "certification_speedup": min(r["speedup_vs_best_torch"] for r in results["certification"]),
        "training_speedup": min(r["speedup_vs_best_torch"] for r in results["training"]),
        "fraction_of_matmul_rate": min(r["fraction_of_matmul_rate"] for r in results["certification"]),
        "peak_rss_gb": results["memory"]["peak_rss_mb"] / 1024.0,
        "certify_compile_s": results["memory"]["certify_compile_s"],
    }
    return [{"target": name, "value": value[key], "met": value[key] >= t if up else value[key] < t}
            for name, key, t, up in TARGETS]


def _table(rows, columns) -> list:
    """Markdown table of `rows` (dicts); columns are (header, key, format)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(format(r[k], f) for _, k, f in columns) + " |")
    return lines + [""]


def markdown(results: dict) -> str:
    m = results["machine"]
    v = m["versions"]
    out = [f"# Benchmarks ({'quick' if results['quick'] else 'full'} run)", "",
           f"- Date: {results['date']}; command: `{results['command']}`",
           f"- Machine: {m['cpu']}, {m['cores']} cores (JAX device {m['jax_device']}, "
           f"torch threads {m['torch_threads']}); load average at start {m['load_average_at_start']:.1f}",
           f"- Versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, torch {v['torch']}, "
           f"numpy {v['numpy']}",
           "- Every ratio comes from runs interleaved in one process (medians).", "",
           "## Targets (worst case over the models measured)", ""]
    out += _table(results["targets"], [("target", "target", "s"), ("value", "value", ".3g"),
                                       ("met", "met", "")])
    out += ["## 1. Certification: Monte Carlo samples/s (one image)", ""]
    out += _table(results["certification"], [
        ("model", "model", "s"), ("samples", "samples", "d"), ("chunk", "chunk", "d"),
        ("ours", "ours_samples_per_s", ".0f"), ("torch NCHW", "torch_nchw_samples_per_s", ".0f"),
        ("torch channels_last", "torch_channels_last_samples_per_s", ".0f"),
        ("ours / best torch", "speedup_vs_best_torch", ".2f")])
    out += ["Certified results on the same images (independent noise; agreement up to Monte Carlo "
            "noise; -1 = abstain):", ""]
    out += _table(results["agreement"], [
        ("model", "model", "s"), ("image", "image", "d"), ("n", "n", "d"),
        ("ours pred", "ours_prediction", "d"), ("torch pred", "torch_prediction", "d"),
        ("ours radius", "ours_radius", ".3f"), ("torch radius", "torch_radius", ".3f"),
        ("ours top frac", "ours_top_fraction", ".3f"), ("torch top frac", "torch_top_fraction", ".3f")])
    out += ["## 2. Training: images/s of a full step", ""]
    out += _table(results["training"], [
        ("model", "model", "s"), ("batch", "batch", "d"), ("ours", "ours_images_per_s", ".0f"),
        ("torch NCHW", "torch_nchw_images_per_s", ".0f"),
        ("torch channels_last", "torch_channels_last_images_per_s", ".0f"),
        ("ours / best torch", "speedup_vs_best_torch", ".2f")])
    out += ["## 3. APGD + EOT gradient evaluations/s", ""]
    out += _table(results["attacks"], [
        ("model", "model", "s"), ("batch", "batch", "d"), ("n_iter", "n_iter", "d"),
        ("eot_iter", "eot_iter", "d"), ("first call s", "first_call_s", ".1f"),
        ("grad evals/s", "grad_evals_per_s", ".0f")])
    mem = results["memory"]
    out += ["## 4. Memory and compile time of certify (one image, fresh process)", "",
            f"{mem['model']}, n0 = {mem['n0']}, n = {mem['n']}, batch_size = {mem['batch_size']}: "
            f"peak RSS {mem['peak_rss_mb']:.0f} MB ({mem['rss_before_certify_mb']:.0f} MB before "
            f"certify), compile {mem['certify_compile_s']:.1f} s (JAX's compile events; "
            f"selection and estimation share one executable), first call {mem['first_call_s']:.1f} s.", "",
            "## 5. FLOP rate of certification", ""]
    out += _table(results["certification"], [
        ("model", "model", "s"), ("model FLOP/sample", "flops_per_sample", ".3g"),
        ("XLA count incl. RNG integer ops", "xla_flops_per_sample_with_rng", ".3g"),
        ("achieved GFLOP/s", "achieved_gflops", ".2f"), ("matmul GFLOP/s", "matmul_gflops", ".1f"),
        ("fraction", "fraction_of_matmul_rate", ".3f")])
    out += ["The rate counts the model's floating-point work (XLA's count with each Gaussian draw "
            "replaced by a broadcast); XLA's count of the real chunk adds the Threefry hash's "
            "integer ops, which are not floating-point work and are left out.", ""]
    out += ["## Profile: random-number generation in the certification forward", ""]
    out += _table(results["profile"], [
        ("model", "model", "s"), ("chunk", "chunk", "d"), ("normals/sample", "normals_per_sample", "d"),
        ("forward s", "forward_s", ".3f"), ("normals only s", "normals_s", ".3f"),
        ("RNG share", "rng_share_of_forward", ".2f"), ("ns/normal", "ns_per_normal", ".1f"),
        ("ns/normal, jax.random.normal", "jax_random_ns_per_normal", ".1f")])
    out += ["The model draws with `hycas_jax.rng.normal`: the same numbers as `jax.random.normal`, "
            "bit for bit, with the Threefry rounds unrolled so that XLA fuses them (JAX lowers them "
            "as a rolled loop on CPU).", ""]
    for p in results["profile"]:
        cert = next((r for r in results["certification"] if r["model"] == p["model"]), None)
        if cert is None:
            continue
        ceiling = p["chunk"] / p["normals_s"]
        best_torch = max(cert["torch_nchw_samples_per_s"], cert["torch_channels_last_samples_per_s"])
        out += [f"Ceiling for {p['model']}: drawing the Gaussians alone, with no model at all, allows "
                f"{ceiling:.0f} samples/s, {ceiling / best_torch:.2f}x the best torch rate of this run; "
                "the torch reference draws the same number of normals.", ""]
    if mem.get("note"):
        out += [f"Memory note: {mem['note']}.", ""]
    if results.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(out)
