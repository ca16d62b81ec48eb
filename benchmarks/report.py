"""Targets of issue 7 checked against results, merging rerun sections, and the RESULTS.md table."""
from __future__ import annotations

TARGETS = (  # name, results key, threshold, higher is better
    ("certification >= 3x torch", "certification_speedup", 3.0, True),
    ("training step >= 1.0x torch", "training_speedup", 1.0, True),
    ("certification >= 50% of matmul FLOP rate", "fraction_of_matmul_rate", 0.5, True),
    ("peak memory < 2 GB certifying one image", "peak_memory_gb", 2.0, False),
    ("certify compile < 20 s", "certify_compile_s", 20.0, False),
)


def merge(results: dict, key: str, rows) -> None:
    """Adds a finished section's rows under `key`. A row replaces an earlier row of the
    same model (and image or precision, where rows have them): rerunning a section with
    --update replaces exactly what it measured again."""
    if not isinstance(rows, list):
        results[key] = rows
        return
    ident = lambda r: tuple(r.get(k) for k in ("model", "image", "precision"))
    new = {ident(r) for r in rows}
    results[key] = [r for r in results.get(key, []) if ident(r) not in new] + rows


def peak_memory_mb(memory: dict) -> float:
    """The memory that bounds certification: the accelerator's peak where there is one
    (host RSS then holds only the runtime), else the process's peak RSS."""
    device = memory.get("peak_device_mb")
    return memory["peak_rss_mb"] if device is None else device


def targets(results: dict) -> list:
    """Worst case over models of each targeted quantity measured so far, and whether it
    meets the target."""
    value, bound = {}, {}
    cert = results.get("certification")
    if cert:
        value["certification_speedup"] = min(r["speedup_vs_best_torch"] for r in cert)
        value["fraction_of_matmul_rate"] = min(r["fraction_of_matmul_rate"] for r in cert)
        if all("bound_vs_best_torch" in r for r in cert):  # rows of runs before the bounds lack them
            bound["certification_speedup"] = min(r["bound_vs_best_torch"] for r in cert)
            bound["fraction_of_matmul_rate"] = min(r["fraction_bound"] for r in cert)
    if results.get("training"):
        value["training_speedup"] = min(r["speedup_vs_best_torch"] for r in results["training"])
    if results.get("memory"):
        value["peak_memory_gb"] = peak_memory_mb(results["memory"]) / 1024.0
        value["certify_compile_s"] = results["memory"]["certify_compile_s"]
    rows = []
    for name, key, t, up in TARGETS:
        if key in value:
            row = {"target": name, "value": value[key], "met": value[key] >= t if up else value[key] < t}
            if key in bound:
                row["bound"] = bound[key]
                row["reachable"] = bound[key] >= t
            rows.append(row)
    return rows


def _span(pair) -> str:
    return f"{pair[0]:.2f}-{pair[1]:.2f}"


def _table(rows, columns) -> list:
    """Markdown table of `rows` (dicts); columns are (header, key, format spec or function).
    A key a row lacks (a run made before it was measured) shows as '-'."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join((f(r[k]) if callable(f) else format(r[k], f)) if k in r else "-"
                                       for _, k, f in columns) + " |")
    return lines + [""]


def markdown(results: dict) -> str:
    m = results["machine"]
    v = m["versions"]
    sizes = results.get("sizes", "quick" if results["quick"] else "full")
    gpu = m.get("jax_backend") == "gpu"
    out = [f"# Benchmarks ({sizes} run{', GPU' if gpu else ''})", "",
           f"- Date: {results['date']}; command: `{results['command']}`",
           f"- Machine: {m['cpu']}, {m['cores']} cores (JAX device {m['jax_device']}"
           + (f" {m.get('jax_device_kind', '')}" if gpu else "")
           + f", torch device {m.get('torch_device') or 'cpu'}, torch threads {m['torch_threads']}); "
           f"load average at start {m['load_average_at_start']:.1f}",
           f"- Versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, torch {v['torch']}, "
           f"numpy {v['numpy']}",
           "- Every ratio comes from runs interleaved in one process: each speedup is the median over "
           "rounds of the ratio within one round, and 'per round' its lowest and highest, the spread "
           "this run's load caused; samples/s are medians.", "",
           "## Targets (worst case over the models measured)", ""]
    out += _table(results.get("targets", []), [("target", "target", "s"), ("value", "value", ".3g"),
                                               ("met", "met", ""), ("bound", "bound", ".3g"),
                                               ("reachable", "reachable", "")])
    if any("bound" in r for r in results.get("targets", [])):
        out += ["'bound' (worst model) is the best value an implementation could reach on this machine "
                "that draws the same normals with the same generator and runs the model's FLOPs no faster "
                "than a large matmul, timed in the same interleaved rounds (section 1); 'reachable' says "
                "whether it clears the target.", ""]
    for e in results.get("errors", []):
        out += [f"**Section failed: {e['section']}**: `{e['error']}`", ""]
    out += ["## 1. Certification: Monte Carlo samples/s (one image)", ""]
    cert_rows = [dict(r, torch_chunks=f"{r['torch_nchw_chunk']} / {r['torch_channels_last_chunk']}")
                 if "torch_nchw_chunk" in r else r for r in results.get("certification", [])]
    out += _table(cert_rows, [
        ("model", "model", "s"), ("samples", "samples", "d"), ("chunk", "chunk", "d"),
        ("torch chunk (NCHW / cl)", "torch_chunks", "s"), ("ours", "ours_samples_per_s", ".0f"),
        ("torch NCHW", "torch_nchw_samples_per_s", ".0f"),
        ("torch channels_last", "torch_channels_last_samples_per_s", ".0f"),
        ("ours / best torch", "speedup_vs_best_torch", ".2f"), ("per round", "speedup_range", _span),
        ("normals only", "normals_only_samples_per_s", ".0f"),
        ("RNG bound", "rng_bound_vs_best_torch", ".2f"), ("FLOP bound", "flop_bound_vs_best_torch", ".2f"),
        ("low-pass", "lowpass_form", "s")])
    if any("bound_vs_best_torch" in r for r in results.get("certification", [])):
        out += ["Upper bounds on ours / best torch at equal work, timed in the same interleaved rounds: "
                "'normals only' draws just the standard normals of the same samples (input noise and "
                "every RANI, the same count the torch reference draws), with no model; 'RNG bound' is "
                "best torch time over that time. 'FLOP bound' is best torch time over the model's FLOPs "
                "at the matmul rate of section 5. Ours can beat neither (the first up to the cost of "
                "summing the normals, one add each).", ""]
    forms = [dict(r["lowpass_form_sweep"], model=r["model"])
             for r in results.get("certification", []) if r.get("lowpass_form_sweep")]
    if forms:
        names = sorted({k for row in forms for k in row} - {"model"})
        out += ["Low-pass form: ours first ran with FDPAN's DCT low-pass in each form (the same map; "
                "`freeze(model, lowpass_form=...)`, certify.py's `--lowpass_form`) at the run's "
                "default chunk (one warm-up, two timed calls, interleaved) and kept the fastest, the "
                "'low-pass' column above. Samples/s of that pass:", ""]
        out += _table(forms, [("model", "model", "s")] + [(n, n, ".0f") for n in names])
    sweeps = [dict(row, model=r["model"]) for r in results.get("certification", [])
              for row in r.get("chunk_sweep", [])]
    if sweeps:
        out += ["Batch size: each contender first ran at every chunk size below (one warm-up, two "
                "timed calls, interleaved) and was then timed at its fastest, the 'chunk' columns "
                "above. Samples/s of that first pass:", ""]
        groups = {}  # one table per set of chunk sizes tried
        for row in sweeps:
            groups.setdefault(tuple(sorted((k for k in row if k.isdigit()), key=int)), []).append(row)
        for chunks, rows in groups.items():
            out += _table(rows, [("model", "model", "s"), ("contender", "contender", "s")]
                          + [(c, c, ".0f") for c in chunks])
    out += ["Certified results on the same images (independent noise; agreement up to Monte Carlo "
            "noise; -1 = abstain):", ""]
    out += _table(results.get("agreement", []), [
        ("model", "model", "s"), ("image", "image", "d"), ("n", "n", "d"),
        ("ours pred", "ours_prediction", "d"), ("torch pred", "torch_prediction", "d"),
        ("ours radius", "ours_radius", ".3f"), ("torch radius", "torch_radius", ".3f"),
        ("ours top frac", "ours_top_fraction", ".3f"), ("torch top frac", "torch_top_fraction", ".3f")])
    if results.get("logits"):
        out += ["Same weights, same noise (JAX's draws replayed into torch), on the benchmark device: "
                "largest |ours - torch| over the logits, relative to the largest |logit|. 'default' is "
                "each library's default precision (TF32 convolutions on recent NVIDIA GPUs), "
                "'float32' full single precision.", ""]
        out += _table(results["logits"], [
            ("model", "model", "s"), ("precision", "precision", "s"), ("batch", "batch", "d"),
            ("max relative difference", "max_rel_diff", ".1e"), ("same argmax", "same_argmax", "")])
    out += ["## 2. Training: images/s of a full step", ""]
    out += _table(results.get("training", []), [
        ("model", "model", "s"), ("batch", "batch", "d"), ("ours", "ours_images_per_s", ".0f"),
        ("torch NCHW", "torch_nchw_images_per_s", ".0f"),
        ("torch channels_last", "torch_channels_last_images_per_s", ".0f"),
        ("ours / best torch", "speedup_vs_best_torch", ".2f"), ("per round", "speedup_range", _span)])
    out += ["## 3. APGD + EOT gradient evaluations/s", ""]
    out += _table(results.get("attacks", []), [
        ("model", "model", "s"), ("batch", "batch", "d"), ("n_iter", "n_iter", "d"),
        ("eot_iter", "eot_iter", "d"), ("first call s", "first_call_s", ".1f"),
        ("grad evals/s", "grad_evals_per_s", ".0f")])
    mem = results.get("memory")
    out += ["## 4. Memory and compile time of certify (one image, fresh process)", ""]
    if mem:
        device = ("" if mem.get("peak_device_mb") is None else
                  f"peak device memory {mem['peak_device_mb']:.0f} MB (JAX's allocator), ")
        out += [f"{mem['model']}, n0 = {mem['n0']}, n = {mem['n']}, batch_size = {mem['batch_size']}: "
                f"{device}peak RSS {mem['peak_rss_mb']:.0f} MB ({mem['rss_before_certify_mb']:.0f} MB before "
                f"certify), compile {mem['certify_compile_s']:.1f} s (JAX's compile events; "
                f"selection and estimation share one executable), first call {mem['first_call_s']:.1f} s.", ""]
    out += ["## 5. FLOP rate of certification", ""]
    out += _table(results.get("certification", []), [
        ("model", "model", "s"), ("model FLOP/sample", "flops_per_sample", ".3g"),
        ("XLA count incl. RNG integer ops", "xla_flops_per_sample_with_rng", ".3g"),
        ("achieved GFLOP/s", "achieved_gflops", ".2f"), ("matmul GFLOP/s", "matmul_gflops", ".1f"),
        ("fraction", "fraction_of_matmul_rate", ".3f"), ("fraction bound", "fraction_bound", ".3f")])
    out += ["The rate counts the model's floating-point work (XLA's count with each Gaussian draw "
            "replaced by a broadcast); XLA's count of the real chunk adds the Threefry hash's "
            "integer ops, which are not floating-point work and are left out. 'fraction bound' is the "
            "fraction reached if the model cost no time beyond drawing its normals.", ""]
    out += ["## Profile: random-number generation in the certification forward", ""]
    out += _table(results.get("profile", []), [
        ("model", "model", "s"), ("chunk", "chunk", "d"), ("normals/sample", "normals_per_sample", "d"),
        ("forward s", "forward_s", ".3g"), ("normals only s", "normals_s", ".3g"),
        ("RNG share", "rng_share_of_forward", ".2f"), ("ns/normal", "ns_per_normal", ".2g"),
        ("ns/normal, jax.random.normal", "jax_random_ns_per_normal", ".2g")])
    out += ["The model draws with `hycas_jax.rng.normal`: the same numbers as `jax.random.normal`, "
            "bit for bit, with the Threefry rounds unrolled so that XLA fuses them (JAX lowers them "
            "as a rolled loop on CPU; on a GPU it has a fused kernel of its own).", ""]
    if mem and mem.get("note"):
        out += [f"Memory note: {mem['note']}.", ""]
    if results.get("freeze"):
        out += ["## Freezing: certification samples/s with derived weights computed once", ""]
        out += _table(results["freeze"], [
            ("model", "model", "s"), ("samples", "samples", "d"), ("chunk", "chunk", "d"),
            ("unfrozen", "unfrozen_samples_per_s", ".0f"), ("frozen", "frozen_samples_per_s", ".0f"),
            ("gain", "gain", ".2f")])
        out += ["`hycas_jax.freeze(model)` computes the weights layers derive from their parameters "
                "(normalized SNC kernels, matrix exponentials, the head's SVD norm, the gate's softmax; "
                "FDPAN's mix folded into its conv) once; certification above uses it.", ""]
    if results.get("lowpass"):
        out += ["## DCT low-pass forms: certification samples/s, frozen model", ""]
        out += _table(results["lowpass"], [
            ("model", "model", "s"), ("FDPAN inputs", "fdpan_inputs", "s"), ("chunk", "chunk", "d"),
            ("einsum", "einsum_samples_per_s", ".0f"), ("matmul", "matmul_samples_per_s", ".0f"),
            ("kron", "kron_samples_per_s", ".0f"), ("best", "best", "s"),
            ("best / einsum", "best_gain", ".2f"),
            ("logit change, matmul", "matmul_max_logit_change", ".1e"),
            ("logit change, kron", "kron_max_logit_change", ".1e")])
        out += ["The same map computed three ways (`hycas_jax.nn.dct.lowpass`): one einsum, the "
                "model's default; two batched matmuls along the memory layout; one matmul by the "
                "Kronecker product of the two projections. The logit change (largest change against "
                "einsum on the same noise, relative to the largest logit) is float rounding: float32 on a CPU; "
                "on a GPU JAX's default precision runs these matmuls in TF32, so it is of the size of "
                "the 'default' rows of the logits table.", ""]
    for p in results.get("ops", []):
        out += [f"## Profile: device time per model component ({p['model']}, chunk {p['chunk']}, "
                f"{p['device']})", ""]
        out += _table(p["by_component"], [("component", "component", "s"), ("ms per chunk", "ms", ".3g"),
                                          ("share", "share", ".2f")])
        out += ["From a jax.profiler trace of the Monte Carlo pass (`benchmarks/bench_profile.py`): "
                "each compiled op's time, counted under the named scope of the model component it "
                "comes from. A fused op counts under the scope of its root: the `rani` row also holds "
                "the Gaussian draws of every RANI, and the gate they feed. On a CPU ops on different "
                "threads overlap, so the times sum to more than the wall time.", ""]
    notes = [n for n in results.get("notes", []) if n]  # "" = a rerun that finished nothing
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
