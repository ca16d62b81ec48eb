"""The speed targets per device checked against results, merging rerun sections, and the
RESULTS.md table."""
from __future__ import annotations

_SHARED = (("training step >= 1.0x torch", "training_speedup", 1.0, True),
           ("peak memory < 2 GB certifying one image", "peak_memory_gb", 2.0, False),
           ("certify compile < 20 s", "certify_compile_s", 20.0, False))
TARGETS = {  # device -> (name, results key, threshold, higher is better)
    "cpu": (("certification >= 2x torch", "certification_speedup", 2.0, True),) + _SHARED,
    "gpu": (("certification >= 3x torch", "certification_speedup", 3.0, True),) + _SHARED + (
        ("ResNet-18 32x32x3 certified at n = 100,000 in <= 1 s", "resnet_certify_s", 1.0, False),),
}
# Reported with no target: how far ours is from its random-number floor (worst model).
REPORTED = (("fraction of the RNG bound reached", "fraction_of_rng_bound"),)


def device_of(results: dict) -> str:
    return "gpu" if results.get("machine", {}).get("jax_backend") == "gpu" else "cpu"


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
    meets its target on the results' device (`TARGETS`); then the `REPORTED` quantities."""
    value, bound = {}, {}
    cert = results.get("certification")
    if cert:
        value["certification_speedup"] = min(r["speedup_vs_best_torch"] for r in cert)
        if all("bound_vs_best_torch" in r for r in cert):  # rows of runs before the bounds lack them
            bound["certification_speedup"] = min(r["bound_vs_best_torch"] for r in cert)
        if all("fraction_of_rng_bound" in r for r in cert):
            value["fraction_of_rng_bound"] = min(r["fraction_of_rng_bound"] for r in cert)
    if results.get("training"):
        value["training_speedup"] = min(r["speedup_vs_best_torch"] for r in results["training"])
    if results.get("memory"):
        value["peak_memory_gb"] = peak_memory_mb(results["memory"]) / 1024.0
        value["certify_compile_s"] = results["memory"]["certify_compile_s"]
    if results.get("resnet_certify"):
        value["resnet_certify_s"] = results["resnet_certify"]["seconds"]
    rows = []
    for name, key, t, up in TARGETS[device_of(results)]:
        if key in value:
            row = {"target": name, "value": value[key], "met": value[key] >= t if up else value[key] < t}
            if key in bound:
                row["bound"] = bound[key]
                row["reachable"] = bound[key] >= t
            rows.append(row)
    rows += [{"target": name, "value": value[key]} for name, key in REPORTED if key in value]
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
                "that draws the same random values with the same generator and runs the model's FLOPs "
                "no faster than a large matmul, timed in the same interleaved rounds (section 1); "
                "'reachable' says whether it clears the target. 'fraction of the RNG bound reached' is "
                "ours / best torch over the RNG bound, worst model: how close ours runs to its own "
                "random-number floor.", ""]
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
        ("ours, exact omega", "ours_normal_samples_per_s", ".0f"),
        ("exact omega / best torch", "speedup_normal_vs_best_torch", ".2f"),
        ("ours, no internal noise", "ours_no_omega_samples_per_s", ".0f"),
        ("no-noise bound", "no_omega_bound_vs_best_torch", ".2f"),
        ("normals only", "normals_only_samples_per_s", ".0f"),
        ("RNG bound", "rng_bound_vs_best_torch", ".2f"),
        ("fraction of RNG bound", "fraction_of_rng_bound", ".2f"),
        ("FLOP bound", "flop_bound_vs_best_torch", ".2f"), ("torch omega", "torch_omega", "s"),
        ("low-pass", "lowpass_form", "s")])
    if any("bound_vs_best_torch" in r for r in results.get("certification", [])):
        out += ["RANI's omega: ours draws it as the models' config says, `quantile16` (two values per "
                "32-bit random word, within 1e-5 of N(0, 1) in Kolmogorov distance; the input noise "
                "stays exact). 'ours, exact omega' is the same weights drawing exact normals for omega "
                "(the draws before), timed in the same rounds. The torch reference draws omega the "
                "fastest way torch has for that law, timed once per run ('torch omega': `randn`, "
                "exact normals, or its own 16-bit map). 'ours, no internal noise' is the same "
                "weights with omega a constant (no internal random numbers: no longer the "
                "model, a timing floor); 'no-noise bound' is best torch time over its time, "
                "the most any way of drawing the internal noise could give.", "",
                "Upper bounds on ours / best torch at equal work, timed in the same interleaved rounds: "
                "'normals only' draws just the random values of the same samples (input noise and "
                "every RANI, each in the model's form) and writes them out, with no model; 'RNG bound' "
                "is best torch time over that time. 'FLOP bound' is best torch time over the model's "
                "FLOPs at the matmul rate of section 5. Ours can beat neither: it draws the same "
                "values and writes at least as many (each RANI's output).", ""]
    impl_rows = [dict(r, impl=k[len("speedup_ours_"):-len("_vs_best_torch")], value=v,
                      rate=r[f"ours_{k[len('speedup_ours_'):-len('_vs_best_torch')]}_samples_per_s"])
                 for r in results.get("certification", []) for k, v in r.items()
                 if k.startswith("speedup_ours_") and k.endswith("_vs_best_torch")]
    if impl_rows:
        out += ["Other key implementations (`prng_impl`), ours at the same chunk in the same rounds:", ""]
        out += _table(impl_rows, [("model", "model", "s"), ("prng_impl", "impl", "s"),
                                  ("samples/s", "rate", ".0f"), ("/ best torch", "value", ".2f")])
    limited = [r for r in results.get("certification", []) if r.get("memory_mb")]
    if limited:
        out += [f"Chunk sizes were limited to passes under {limited[0]['memory_limit_mb']:.0f} MB of "
                "device memory (ours: XLA's memory analysis of the executable; torch: its peak "
                "CUDA allocation). MB per chunk size:", ""]
        rows = [dict({k: v for k, v in by_chunk.items()}, model=r["model"], contender=label)
                for r in limited for label, by_chunk in r["memory_mb"].items()]
        chunks = sorted({k for row in rows for k in row if k.isdigit()}, key=int)
        out += _table(rows, [("model", "model", "s"), ("contender", "contender", "s")]
                      + [(c, c, lambda v: "-" if v is None else f"{v:.0f}") for c in chunks])
    rc = results.get("resnet_certify")
    if rc:
        out += [f"ResNet-18 32x32x3, one image certified at n0 = {rc['n0']}, n = {rc['n']} "
                f"(`smoothing.certify`, warm: compiled by a first call): {rc['seconds']:.2f} s at "
                f"batch_size {rc['batch_size']} ({rc['n'] / rc['seconds']:.0f} samples/s), peak "
                f"device memory {rc['peak_device_mb']:.0f} MB, keys {rc['prng_impl']}. Every run:", ""]
        out += _table(rc["runs"], [("batch_size", "batch_size", "d"), ("prng_impl", "prng_impl", "s"),
                                   ("warm s", "warm_call_s", ".2f"), ("first call s", "first_call_s", ".1f"),
                                   ("peak device MB", "peak_device_mb", lambda v: "-" if v is None else f"{v:.0f}")])
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
    out += ["Random values per sample: the input noise's exact normals, drawn with "
            "`hycas_jax.rng.normal` (the same numbers as `jax.random.normal`, bit for bit, with the "
            "Threefry rounds unrolled so that XLA fuses them; JAX lowers them as a rolled loop on "
            "CPU), and RANI's omega in the model's form (`quantile16`: two values per 32-bit word). "
            "'normals only' writes them out with no model; the last column draws the exact normals "
            "with `jax.random.normal` itself.", ""]
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
