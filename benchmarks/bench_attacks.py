"""Throughput of APGD with EOT on a small stochastic CNN.

Prints one JSON line. A "gradient evaluation" is one forward and backward
pass of one example under one draw of randomness, so a run costs
batch * (n_iter + 1) * eot_iter of them (the start point adds one).

  PYTHONPATH=. python benchmarks/bench_attacks.py --batch 64 --n_iter 20 --eot_iter 8
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp

from hycas_jax.attacks import apgd

NOISE = 0.3


def init_cnn(key, channels=(16, 32, 64), n_classes=10):
    """He-initialised 3x3 convolutions (HWIO) and a dense head."""
    keys = jax.random.split(key, len(channels) + 1)
    convs, c_in = [], 3
    for k, c_out in zip(keys, channels):
        convs.append(jax.random.normal(k, (3, 3, c_in, c_out)) * jnp.sqrt(2.0 / (9 * c_in)))
        c_in = c_out
    head = jax.random.normal(keys[-1], (c_in, n_classes)) / jnp.sqrt(c_in)
    return convs, head


def noisy_cnn(params, x, key):
    """(B, 32, 32, 3) in [0, 1] -> (B, 10); each feature map scaled by 1 + NOISE * N(0, 1)."""
    convs, head = params
    h = x - 0.5
    for k, w in zip(jax.random.split(key, len(convs)), convs):
        h = jax.lax.conv_general_dilated(h, w, (2, 2), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jax.nn.relu(h) * (1 + NOISE * jax.random.normal(k, h.shape))
    return h.mean(axis=(1, 2)) @ head


def measure(logits_fn, params, x, y, *, n_iter, eot_iter, repeats) -> dict:
    """First-call seconds, then mean seconds and gradient evaluations/s of APGD-EOT runs."""
    def attack(seed):
        out = apgd(logits_fn, params, x, y, jax.random.key(seed), eps=8 / 255,
                   n_iter=n_iter, eot_iter=eot_iter)
        return jax.block_until_ready(out)

    start = time.perf_counter()
    attack(0)  # compiles
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for seed in range(1, repeats + 1):
        attack(seed)
    run_s = (time.perf_counter() - start) / repeats
    grad_evals = x.shape[0] * (n_iter + 1) * eot_iter
    return {"device": str(jax.devices()[0]), "batch": x.shape[0], "n_iter": n_iter,
            "eot_iter": eot_iter, "first_call_s": round(compile_s, 3), "run_s": round(run_s, 4),
            "grad_evals_per_s": round(grad_evals / run_s, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n_iter", type=int, default=10)
    parser.add_argument("--eot_iter", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = init_cnn(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (args.batch, 32, 32, 3))
    y = jnp.argmax(noisy_cnn(params, x, jax.random.key(2)), axis=1)
    print(json.dumps({"benchmark": "apgd_eot_small_cnn", **measure(
        noisy_cnn, params, x, y, n_iter=args.n_iter, eot_iter=args.eot_iter,
        repeats=args.repeats)}))


if __name__ == "__main__":
    main()
