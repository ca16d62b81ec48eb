"""Peak resident memory and first-call compile time of certifying one image.

Run in a fresh process (run.py starts it) so ru_maxrss is this job's peak:

  python benchmarks/bench_memory.py --model "small_cnn 28x28x1" --n 100000
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import common
import jax

from hycas_jax import freeze, functional, rng
from hycas_jax.certification import smoothing

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, MB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a
    child of a large benchmark process would report its parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_cnn 28x28x1", choices=sorted(common.CONFIGS))
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=1000)
    parser.add_argument("--prng_impl", default=rng.DEFAULT_IMPL, choices=rng.IMPLS)
    parser.add_argument("--warm", action="store_true", help="also time a second call (compiled)")
    args = parser.parse_args()
    # A first call measures compiling: never read it from a persistent cache that a
    # JAX_COMPILATION_CACHE_DIR in the environment would otherwise turn on.
    jax.config.update("jax_enable_compilation_cache", False)
    compile_s = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **_: compile_s.append(secs) if event in COMPILE_EVENTS else None)
    config, _, _, _, model = common.jax_model(args.model)
    logits_fn, params = functional(freeze(model))  # as certify.py runs it
    image = common.images(config.model.image_shape, 1)
    before_rss, before_compile = peak_rss_mb(), sum(compile_s)
    start = time.perf_counter()
    run = lambda: smoothing.certify(logits_fn, params, image, rng.key(0, args.prng_impl),  # noqa: E731
                                    num_classes=config.model.num_classes, sigma=0.25, n0=args.n0,
                                    n=args.n, batch_size=args.batch_size)
    result = run()
    wall = time.perf_counter() - start
    warm = None
    if args.warm:  # certify returns host arrays: the call has finished when it returns
        start = time.perf_counter()
        run()
        warm = time.perf_counter() - start
    stats = jax.devices()[0].memory_stats() or {}  # None on the CPU
    peak_device = stats.get("peak_bytes_in_use")
    print(json.dumps({"model": args.model, "n0": args.n0, "n": args.n, "batch_size": args.batch_size,
                      "prng_impl": args.prng_impl, "warm_call_s": warm,
                      "backend": jax.default_backend(),
                      "first_call_s": wall, "certify_compile_s": sum(compile_s) - before_compile,
                      "peak_rss_mb": peak_rss_mb(), "rss_before_certify_mb": before_rss,
                      "peak_device_mb": None if peak_device is None else peak_device / 2 ** 20,
                      "prediction": int(result.prediction[0])}))


if __name__ == "__main__":
    main()
