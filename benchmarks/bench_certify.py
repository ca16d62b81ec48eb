"""Certification: Monte Carlo samples/s of ours vs the PyTorch reference, the
certified results of both on the same images, and the achieved FLOP rate.

Ours is `montecarlo.sample_stats` (all chunks in one jitted call); the
reference is Cohen et al.'s loop over batches of noisy copies in PyTorch
eager, NCHW and channels_last. One image per call, as certification runs.
"""
from __future__ import annotations

import math

import bench_profile
import common
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch_reference
from flax import nnx
from scipy import stats

from hycas_jax import freeze, functional, rng
from hycas_jax.certification import montecarlo, smoothing
from hycas_jax.certification import stats as hstats
from hycas_jax.models.fdpan import FDPAN
from hycas_jax.nn import dct

MATMUL_SIZE = {"cpu": 2048, "gpu": 8192}  # big enough to reach the backend's peak


def flops_per_sample(logits_fn, params, image, chunk: int) -> tuple[float, float]:
    """XLA:CPU's FLOP count of one vmapped chunk of noisy forward passes, per sample:
    (the model's floating-point work, everything XLA counts).

    XLA counts every elementwise op, the Threefry hash's integer ops included;
    the first number replaces each Gaussian draw by a broadcast of one key
    word so that only the model's own arithmetic is counted (the FLOP-rate
    target is about that work), the second is XLA's count of the real chunk.
    """
    def count():
        def run(params, keys):  # a fresh function each time: jit caches traces per function
            def one(key):
                noise_key, model_key = jax.random.split(key)
                noisy = image + 0.25 * rng.normal(noise_key, image.shape)
                return logits_fn(params, noisy, model_key)
            return jax.vmap(one)(keys)

        keys = jax.random.split(jax.random.key(0), chunk)
        # Counted for the CPU whatever the backend: a GPU's cost analysis leaves out the
        # convolutions it hands to cuDNN, and the count is a property of the model.
        cpu = jax.devices("cpu")[0]
        lowered = jax.jit(run).lower(jax.device_put(params, cpu), jax.device_put(keys, cpu))
        cost = lowered.compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) / chunk

    everything = count()
    normal = rng.normal
    rng.normal = lambda key, shape=(), dtype=jnp.float32, **_: jnp.broadcast_to(
        jax.random.key_data(key)[0].astype(dtype), tuple(shape))
    try:
        model_only = count()
    finally:
        rng.normal = normal
    return model_only, everything


def matmul_contender():
    """A jitted float32 square matmul and its FLOP count (the machine's peak proxy),
    at JAX's default precision, the one the model's convolutions run at."""
    size = MATMUL_SIZE.get(jax.default_backend(), MATMUL_SIZE["gpu"])
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    return (lambda: matmul(a).block_until_ready()), 2.0 * size ** 3


def _torch_image(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.transpose(image, (2, 0, 1)).copy())


def _ours(model, image, classes: int, *, num: int, chunk: int, sigma: float,
          impl: str = rng.DEFAULT_IMPL):
    """A thunk running our certification pass (`montecarlo.sample_stats`) of `model`
    on one image: `num` samples in chunks of `chunk`, always the same key (of
    implementation `impl`)."""
    logits_fn, params = functional(model)
    return lambda: montecarlo.sample_stats(logits_fn, params, image, rng.key(0, impl),
                                          num_classes=classes, sigma=sigma, num=num,
                                          chunk_size=chunk)


def ours_memory_mb(model, image, classes: int, *, num: int, chunk: int, sigma: float = 0.25) -> float:
    """Device memory of our certification pass's executable (XLA's memory analysis:
    arguments, outputs and temporaries), MB; the peak of a certification at this chunk
    size, which holds nothing else on the device but the weights."""
    logits_fn, params = functional(model)
    keys = jax.random.split(jax.random.key(0))[None]
    compiled = montecarlo.counting_pass.lower(
        logits_fn, params, jnp.asarray(image, jnp.float32), keys[:, 0], jnp.float32(sigma),
        jnp.float32(np.inf), num_classes=classes, split=num, num=num, chunk_size=chunk).compile()
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes) / 2 ** 20


def _torch_memory_mb(run) -> float:
    """Peak CUDA memory torch allocates during `run()`, MB (None off CUDA)."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2 ** 20


def _normals_contender(model, image, *, num: int, chunk: int):
    """A thunk drawing only the random values of `num` noisy forward passes (the input
    noise and every RANI, each in its form), in chunks of `chunk`, and the count per sample."""
    logits_fn, params = functional(model)
    draws = bench_profile.draw_shapes(logits_fn, params, jnp.asarray(image))
    draw = bench_profile.normals_only(draws)
    keys = [jax.random.split(jax.random.key(i), chunk) for i in range(-(-num // chunk))]

    def run():
        for k in keys:
            out = draw(k)
        jax.block_until_ready(out)
    return run, sum(math.prod(s) for s, _ in draws)


def _best_form(model, image, classes: int, forms, *, num: int, chunk: int, sigma: float):
    """The fastest of `forms` (`dct.LOWPASS_FORMS`) for our pass of `model` frozen with
    that low-pass form, and each form's samples/s (one warm-up, two timed calls,
    interleaved), at one chunk size."""
    if len(forms) == 1:
        return forms[0], {}
    t = common.interleaved({f: _ours(freeze(model, lowpass_form=f), image, classes, num=num, chunk=chunk,
                                     sigma=sigma) for f in forms}, 2)
    return min(t, key=t.get), {f: num / t[f] for f in forms}


def throughput(name: str, *, num: int, chunk: int, repeats: int, sweep=(), forms=("einsum",),
               sigma: float = 0.25, memory_limit_mb: float | None = None, impls=()) -> dict:
    """Samples/s of ours and of the reference (both layouts), interleaved, with the
    FLOP rate of ours against a jitted matmul timed in the same rounds.

    Batch size: every contender first runs with each chunk size of `sweep` (and
    `chunk`), and is then timed at its own fastest one. On a CPU torch eager is
    fastest at smaller batches than ours, so one shared size would favour us.

    Two upper bounds on ours / torch at equal work come from the same rounds:
    `rng_bound` times drawing the pass's normals alone (no model), `flop_bound`
    the model's FLOPs at the matmul rate; ours cannot beat either, so
    `bound_vs_best_torch` is the best ratio any design of this computation could
    reach on this machine with these generators. `ours_no_omega` runs the same
    weights with RANI's omega a constant (no internal random numbers): how much any
    way of drawing the internal noise could still gain.

    memory_limit_mb: only chunk sizes whose pass stays under it, for each contender
    (ours: XLA's memory analysis of the executable; torch: its peak CUDA allocation).
    impls: further key implementations ours also runs with (`ours_<impl>`).

    Low-pass form: with several `forms`, ours first runs with each at `chunk`
    and keeps the fastest (`freeze(model, lowpass_form=...)`, which certify.py's
    --lowpass_form sets); the same map, so equal work. FLOPs are always counted
    in the einsum form, the least arithmetic for that map."""
    config, _, _, _, model = common.jax_model(name)
    classes = config.model.num_classes
    image = common.images(config.model.image_shape, 1)
    form, form_rates = _best_form(model, image, classes, tuple(forms), num=num, chunk=chunk, sigma=sigma)
    frozen = freeze(model, lowpass_form=form)  # as certify.py runs it
    reference = torch_reference.from_jax(model, common.torch_reference_device())
    timg = _torch_image(image[0])
    torch_run = lambda cl, c: (lambda: torch_reference.sample_counts(
        reference, timg, num=num, batch_size=c, sigma=sigma, num_classes=classes, channels_last=cl))
    candidates = sorted({chunk, *sweep})
    contenders = {
        "ours": {c: _ours(frozen, image, classes, num=num, chunk=c, sigma=sigma) for c in candidates},
        "torch_nchw": {c: torch_run(False, c) for c in candidates},
        "torch_channels_last": {c: torch_run(True, c) for c in candidates}}
    memory = {}
    if memory_limit_mb:
        memory["ours"] = {c: ours_memory_mb(frozen, image, classes, num=num, chunk=c, sigma=sigma)
                          for c in candidates}
        for label, cl in (("torch_nchw", False), ("torch_channels_last", True)):
            memory[label] = {c: _torch_memory_mb(torch_run(cl, c)) for c in candidates}
        for label, by_chunk in memory.items():
            kept = {c: contenders[label][c] for c in candidates
                    if by_chunk[c] is None or by_chunk[c] < memory_limit_mb}
            contenders[label] = kept or {min(candidates): contenders[label][min(candidates)]}
    best, rates = common.best_chunks(contenders, num) if len(candidates) > 1 else (
        {label: chunk for label in contenders}, {})
    extra = {f"ours_{impl}": _ours(frozen, image, classes, num=num, chunk=best["ours"], sigma=sigma,
                                   impl=impl) for impl in impls}
    matmul, matmul_flops = matmul_contender()
    normals, normals_per_sample = _normals_contender(frozen, image, num=num, chunk=best["ours"])
    # The same weights drawing RANI's omega as exact normals (the draws before
    # `quantile16`), and with no internal random numbers at all.
    exact = freeze(common.jax_model(name, rani_noise="normal")[-1], lowpass_form=form)
    ours_normal = _ours(exact, image, classes, num=num, chunk=best["ours"], sigma=sigma)
    with bench_profile.constant_omega():
        still = freeze(common.jax_model(name, rani_noise=bench_profile.CONSTANT)[-1], lowpass_form=form)
        ours_still = _ours(still, image, classes, num=num, chunk=best["ours"], sigma=sigma)
        rounds = common.timed_rounds(
            {**{label: contenders[label][best[label]] for label in contenders}, **extra,
             "ours_normal": ours_normal, "ours_no_omega": ours_still, "matmul": matmul,
             "normals": normals}, repeats)
    t = common.medians(rounds)
    torches = ("torch_nchw", "torch_channels_last")
    ratio, low, high = common.speedup(rounds, "ours", torches)
    ratio_normal = common.speedup(rounds, "ours_normal", torches)[0]
    best_torch = min(t["torch_nchw"], t["torch_channels_last"])
    flops, flops_with_rng = flops_per_sample(*functional(freeze(model)), image, best["ours"])
    matmul_rate = matmul_flops / t["matmul"]
    flop_bound = best_torch / (flops * num / matmul_rate)  # the model's FLOPs at the matmul rate
    rng_bound = common.speedup(rounds, "normals", ("torch_nchw", "torch_channels_last"))[0]
    return {"model": name, "samples": num, "chunk": best["ours"], "repeats": repeats,
            "torch_nchw_chunk": best["torch_nchw"], "torch_channels_last_chunk": best["torch_channels_last"],
            "lowpass_form": form, "lowpass_form_sweep": form_rates,
            "chunk_sweep": [{"contender": label, **{str(c): r for c, r in by_chunk.items()}}
                            for label, by_chunk in rates.items()],
            "ours_samples_per_s": num / t["ours"],
            "ours_normal_samples_per_s": num / t["ours_normal"],
            "speedup_normal_vs_best_torch": ratio_normal,
            "ours_no_omega_samples_per_s": num / t["ours_no_omega"],
            "no_omega_bound_vs_best_torch": common.speedup(rounds, "ours_no_omega", torches)[0],
            **{f"{label}_samples_per_s": num / t[label] for label in extra},
            **{f"speedup_{label}_vs_best_torch": common.speedup(rounds, label, torches)[0]
               for label in extra},
            **({"memory_limit_mb": memory_limit_mb,
                "memory_mb": {label: {str(c): m for c, m in by_chunk.items()}
                              for label, by_chunk in memory.items()}} if memory else {}),
            "torch_omega": torch_reference.fastest_quantile16(common.torch_reference_device())[0],
            "torch_nchw_samples_per_s": num / t["torch_nchw"],
            "torch_channels_last_samples_per_s": num / t["torch_channels_last"],
            "speedup_vs_best_torch": ratio, "speedup_range": [low, high],
            "flops_per_sample": flops, "xla_flops_per_sample_with_rng": flops_with_rng,
            "achieved_gflops": flops * num / t["ours"] / 1e9,
            "matmul_gflops": matmul_rate / 1e9,
            "fraction_of_matmul_rate": flops * num / t["ours"] / matmul_rate,
            "normals_per_sample": normals_per_sample,
            "normals_only_samples_per_s": num / t["normals"],
            "rng_bound_vs_best_torch": rng_bound, "flop_bound_vs_best_torch": flop_bound,
            "bound_vs_best_torch": min(rng_bound, flop_bound),
            "fraction_of_rng_bound": ratio / rng_bound,
            "fraction_bound": min(1.0, flops * num / t["normals"] / matmul_rate)}


def freeze_gain(name: str, *, num: int, chunk: int, repeats: int, sigma: float = 0.25) -> dict:
    """Samples/s of our certification pass with the model as trained and frozen
    (`hycas_jax.freeze`: derived weights computed once), interleaved."""
    config, _, _, _, model = common.jax_model(name)
    image = common.images(config.model.image_shape, 1)
    contenders = {label: _ours(m, image, config.model.num_classes, num=num, chunk=chunk, sigma=sigma)
                  for label, m in (("unfrozen", model), ("frozen", freeze(model)))}
    t = common.interleaved(contenders, repeats)
    return {"model": name, "samples": num, "chunk": chunk,
            "unfrozen_samples_per_s": num / t["unfrozen"], "frozen_samples_per_s": num / t["frozen"],
            "gain": t["unfrozen"] / t["frozen"]}


def lowpass_forms(name: str, *, num: int, chunk: int, repeats: int, sigma: float = 0.25) -> dict:
    """Samples/s of our certification pass (frozen model) with FDPAN's DCT low-pass in
    each of `dct.LOWPASS_FORMS`, interleaved, and each form's largest logit change
    against the default form on the same noise (the same map, so float rounding only)."""
    config, _, _, _, model = common.jax_model(name)
    image = common.images(config.model.image_shape, 1)
    keys = jax.random.split(jax.random.key(2), 8)
    contenders, logits, shapes = {}, {}, set()
    for form in dct.LOWPASS_FORMS:
        m = freeze(model)
        for _, module in nnx.iter_graph(m):
            if isinstance(module, FDPAN):
                module.lowpass_form = form
                shapes.add((*module.input_hw, module.conv.kernel.shape[2]))
        logits_fn, params = functional(m)
        logits[form] = np.asarray(jax.jit(jax.vmap(lambda k, f=logits_fn, p=params: f(
            p, image + sigma * jax.random.normal(k, image.shape), k)))(keys))
        contenders[form] = _ours(m, image, config.model.num_classes, num=num, chunk=chunk, sigma=sigma)
    t = common.interleaved(contenders, repeats)
    scale = np.abs(logits["einsum"]).max()
    return {"model": name, "samples": num, "chunk": chunk,
            "fdpan_inputs": " ".join("x".join(map(str, s)) for s in sorted(shapes, reverse=True)),
            **{f"{form}_samples_per_s": num / t[form] for form in dct.LOWPASS_FORMS},
            **{f"{form}_max_logit_change": float(np.abs(logits[form] - logits["einsum"]).max() / scale)
               for form in dct.LOWPASS_FORMS if form != "einsum"},
            "best": min(t, key=t.get), "best_gain": t["einsum"] / min(t.values())}


def agreement(name: str, *, count: int, n0: int, n: int, chunk: int, sigma: float = 0.25,
              alpha: float = 1e-3) -> list:
    """CERTIFY by ours and by the reference on the same images (independent noise)."""
    config, _, _, _, model = common.jax_model(name)
    logits_fn, params = functional(freeze(model))  # as certify.py runs it
    classes = config.model.num_classes
    batch = common.images(config.model.image_shape, count, seed=1)
    reference = torch_reference.from_jax(model, common.torch_reference_device())
    rows = []
    for i, image in enumerate(batch):
        ours = smoothing.certify(logits_fn, params, image[None], jax.random.key(i), num_classes=classes,
                                 sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=chunk)
        torch.manual_seed(i)
        theirs = torch_certify(reference, _torch_image(image), classes, n0=n0, n=n, chunk=chunk,
                               sigma=sigma, alpha=alpha)
        rows.append({"model": name, "image": i, "n0": n0, "n": n, "sigma": sigma,
                     "ours_prediction": int(ours.prediction[0]), "ours_radius": float(ours.radius[0]),
                     "ours_top_fraction": float(ours.counts[0].max() / n),
                     **{f"torch_{k}": v for k, v in theirs.items()}})
    return rows


def torch_certify(reference, image, classes, *, n0, n, chunk, sigma, alpha) -> dict:
    """Cohen et al.'s CERTIFY with the reference's sampling loop."""
    run = lambda num: torch_reference.sample_counts(reference, image, num=num, batch_size=chunk,
                                                    sigma=sigma, num_classes=classes)
    top = int(np.argmax(run(n0)))
    counts = run(n)
    p_lower = float(hstats.clopper_pearson_lower(counts[top], n, alpha))
    certified = p_lower >= 0.5
    return {"prediction": top if certified else -1,
            "radius": float(sigma * stats.norm.ppf(p_lower)) if certified else 0.0,
            "top_fraction": float(counts.max() / n)}


def logit_agreement(name: str, *, batch: int = 4) -> list:
    """Largest |ours - torch| / max |logit| on the benchmark device for the same weights
    and the same noise (JAX's draws replayed into torch): once at each library's default
    precision (TF32 convolutions on recent GPUs) and once at full float32. Ours is the
    frozen model that is benchmarked (`hycas_jax.nn.frozen`); the reference is built
    from the original, so this also checks that freezing keeps the function."""
    config, _, _, _, model = common.jax_model(name)
    device = common.torch_reference_device()
    reference = torch_reference.from_jax(model, device)
    x = jnp.asarray(common.images(config.model.image_shape, batch, seed=2))
    xt = torch.from_numpy(np.transpose(np.asarray(x), (0, 3, 1, 2)).copy()).to(device)
    rows = []
    for precision in ("default", "float32"):
        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        if precision == "float32":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            with jax.default_matmul_precision("highest" if precision == "float32" else "default"):
                logits, draws = torch_reference.recorded_forward(freeze(model), x, jax.random.key(3))
            with torch.no_grad():
                theirs = reference(xt, torch_reference.ReplayNoise(draws, device)).cpu().numpy()
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        rows.append({"model": name, "precision": precision, "batch": batch,
                     "max_abs_logit": float(np.abs(logits).max()),
                     "max_rel_diff": float(np.abs(theirs - logits).max() / np.abs(logits).max()),
                     "same_argmax": bool((theirs.argmax(1) == logits.argmax(1)).all())})
    return rows
