"""Runs every benchmark and writes benchmarks/results.json and RESULTS.md.

  python benchmarks/run.py [--quick]

--quick uses few samples and skips ResNet-18 (minutes on 2 CPU cores); the
full run adds ResNet-18 (few samples: it is slow on CPU) and certifies at the
real n = 100,000 for the memory figure. Ratios come from interleaved runs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

import bench_attacks
import bench_certify
import bench_profile
import bench_train
import common
import report
from hycas_jax import functional

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = ("small_cnn 28x28x1", "small_cnn 32x32x3")
SIZES = {  # quick / full
    "cert": ({"num": 1000, "chunk": 500, "repeats": 5}, {"num": 4000, "chunk": 1000, "repeats": 5}),
    "cert_resnet": (None, {"num": 16, "chunk": 16, "repeats": 3}),
    "agree": ({"count": 1, "n0": 100, "n": 1000, "chunk": 500},
              {"count": 3, "n0": 100, "n": 10_000, "chunk": 1000}),
    "train": ({"batch": 64, "repeats": 7}, {"batch": 128, "repeats": 7}),
    "train_resnet": (None, {"batch": 16, "repeats": 5}),
    "attack": ({"batch": 8, "n_iter": 5, "eot_iter": 2, "repeats": 2},
               {"batch": 32, "n_iter": 10, "eot_iter": 4, "repeats": 3}),
    "memory_n": (10_000, 100_000),
}


def attacks(size: dict) -> list:
    """APGD-EOT on bench_attacks' toy CNN and on the HyCAS small CNN (32x32x3)."""
    toy = bench_attacks.init_cnn(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (size["batch"], 32, 32, 3))
    y = jnp.argmax(bench_attacks.noisy_cnn(toy, x, jax.random.key(2)), axis=1)
    timing = {k: size[k] for k in ("n_iter", "eot_iter", "repeats")}
    rows = [{"model": "toy noisy CNN (bench_attacks)",
             **bench_attacks.measure(bench_attacks.noisy_cnn, toy, x, y, **timing)}]
    logits_fn, params = functional(common.jax_model("small_cnn 32x32x3")[-1])
    rows.append({"model": "hycas small_cnn 32x32x3", **bench_attacks.measure(logits_fn, params, x, y, **timing)})
    return rows


def memory(n: int) -> dict:
    """Certify one image in a fresh process: peak RSS and compile time."""
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_memory.py"), "--n", str(n)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size = {k: v[0 if args.quick else 1] for k, v in SIZES.items()}
    log = lambda what: print(f"[{datetime.datetime.now():%H:%M:%S}] {what}", flush=True)
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
               "command": "python benchmarks/run.py" + (" --quick" if args.quick else ""),
               "machine": common.machine()}
    log("certification throughput")
    results["certification"] = [bench_certify.throughput(m, **size["cert"]) for m in SMALL]
    if size["cert_resnet"]:
        results["certification"].append(bench_certify.throughput("resnet18 32x32x3", **size["cert_resnet"]))
    log("certified results, ours vs torch")
    results["agreement"] = [r for m in SMALL for r in bench_certify.agreement(m, **size["agree"])]
    log("RNG share")
    results["profile"] = [bench_profile.rng_share(SMALL[0], chunk=size["cert"]["chunk"],
                                                  repeats=size["cert"]["repeats"])]
    log("training")
    results["training"] = [bench_train.throughput(m, **size["train"]) for m in SMALL]
    if size["train_resnet"]:
        results["training"].append(bench_train.throughput("resnet18 32x32x3", **size["train_resnet"]))
    log("attacks")
    results["attacks"] = attacks(size["attack"])
    log("memory and compile time")
    results["memory"] = memory(size["memory_n"])
    results["targets"] = report.targets(results)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write(report.markdown(results))
    log("wrote benchmarks/results.json and benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
