"""Runs every benchmark and writes results JSON and a markdown table.

  python benchmarks/run.py [--profile quick|full|gpu] [--out DIR]
  python benchmarks/run.py --only training,memory --update   # rerun sections into the files

quick uses few samples and skips ResNet-18 (minutes on 2 CPU cores); full
adds ResNet-18 (few samples: it is slow on CPU) and certifies at the real
n = 100,000 for the memory figure; gpu (the default when JAX runs on a GPU)
uses batch and chunk sizes that fill a GPU, and runs the torch reference on
CUDA. CPU runs write benchmarks/results.json and RESULTS.md, GPU runs
results_gpu.json and RESULTS_gpu.md. Ratios come from interleaved runs.

The files are rewritten after every section, so an interrupted run keeps what
it finished; a section that fails is recorded under "errors", the others still
run, and the exit status is then 1.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import traceback

import bench_attacks
import bench_certify
import bench_profile
import bench_train
import common
import jax
import jax.numpy as jnp
import report

from hycas_jax import freeze, functional

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = ("small_cnn 28x28x1", "small_cnn 32x32x3")
RESNET = "resnet18 32x32x3"
SIZES = {
    "quick": {
        "cert": {"num": 1000, "chunk": 500, "repeats": 5}, "cert_resnet": None,
        "sweep": (250, 1000),  # chunk sizes each certification contender also tries; timed at its fastest
        "forms": ("einsum",),  # DCT low-pass forms ours tries (the lowpass section: einsum is best on CPU)
        "agree": {"count": 1, "n0": 100, "n": 1000, "chunk": 500}, "agree_resnet": None,
        "train": {"batch": 64, "repeats": 7}, "train_resnet": None,
        "attack": {"batch": 8, "n_iter": 5, "eot_iter": 2, "repeats": 2},
        "memory": {"n": 10_000, "batch_size": 1000}},
    "full": {
        "cert": {"num": 4000, "chunk": 1000, "repeats": 5},
        "cert_resnet": {"num": 16, "chunk": 16, "repeats": 3},
        "sweep": (250, 500, 2000), "sweep_resnet": (8,), "forms": ("einsum",),
        "agree": {"count": 3, "n0": 100, "n": 10_000, "chunk": 1000},
        "agree_resnet": {"count": 1, "n0": 16, "n": 128, "chunk": 16},  # slow on CPU: a few samples
        "train": {"batch": 128, "repeats": 7}, "train_resnet": {"batch": 16, "repeats": 11},
        "attack": {"batch": 32, "n_iter": 10, "eot_iter": 4, "repeats": 3},
        "memory": {"n": 100_000, "batch_size": 1000}},
    "gpu": {
        "cert": {"num": 100_000, "chunk": 10_000, "repeats": 3},
        "cert_resnet": {"num": 4096, "chunk": 1024, "repeats": 3},
        "sweep": (5000, 20_000), "sweep_resnet": (512, 2048), "forms": ("einsum", "kron"),
        "forms_resnet": ("einsum",),  # the H200's fastest forms in the 2026-11-26 run
        # The GPU targets hold at chunk sizes that keep a pass under 2 GB of device memory.
        "cert_extra": {"memory_limit_mb": 2048.0, "impls": ("rbg",)},
        "resnet_certify": {"n": 100_000, "batch_sizes": (1024, 2048), "impls": ("rbg",)},
        "agree": {"count": 3, "n0": 100, "n": 100_000, "chunk": 10_000},
        "agree_resnet": {"count": 2, "n0": 100, "n": 100_000, "chunk": 1024},
        "train": {"batch": 256, "repeats": 7}, "train_resnet": {"batch": 128, "repeats": 5},
        "attack": {"batch": 128, "n_iter": 10, "eot_iter": 4, "repeats": 3},
        "memory": {"n": 100_000, "batch_size": 10_000}},
}


def attacks(size: dict) -> list:
    """APGD-EOT on bench_attacks' toy CNN and on the HyCAS small CNN (32x32x3)."""
    toy = bench_attacks.init_cnn(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (size["batch"], 32, 32, 3))
    y = jnp.argmax(bench_attacks.noisy_cnn(toy, x, jax.random.key(2)), axis=1)
    timing = {k: size[k] for k in ("n_iter", "eot_iter", "repeats")}
    rows = [{"model": "toy noisy CNN (bench_attacks)",
             **bench_attacks.measure(bench_attacks.noisy_cnn, toy, x, y, **timing)}]
    logits_fn, params = functional(freeze(common.jax_model("small_cnn 32x32x3")[-1]))
    rows.append({"model": "hycas small_cnn 32x32x3", **bench_attacks.measure(logits_fn, params, x, y, **timing)})
    return rows


def memory(n: int, batch_size: int, model: str = SMALL[0], extra=()) -> dict:
    """Certify one image in a fresh process: peak memory and compile time."""
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_memory.py"), "--n", str(n),
                          "--batch_size", str(batch_size), "--model", model, *extra],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def resnet_certify(n: int, batch_sizes, impls) -> dict:
    """ResNet-18 32x32x3: one image certified at n (n0 = 100), warm, in a fresh process per
    setting: every batch size with threefry2x32 keys, then the fastest under 2 GB with each
    other key implementation. The headline is the fastest run under 2 GB."""
    run = lambda b, impl: memory(n, b, model=RESNET, extra=("--warm", "--prng_impl", impl))  # noqa: E731
    runs = [run(b, "threefry2x32") for b in batch_sizes]
    fits = lambda r: r["peak_device_mb"] is None or r["peak_device_mb"] < 2048  # noqa: E731
    best = min((r for r in runs if fits(r)), key=lambda r: r["warm_call_s"], default=runs[0])
    runs += [run(best["batch_size"], impl) for impl in impls]
    best = min((r for r in runs if fits(r)), key=lambda r: r["warm_call_s"], default=best)
    return {"n0": best["n0"], "n": n, "seconds": best["warm_call_s"], "batch_size": best["batch_size"],
            "prng_impl": best["prng_impl"], "peak_device_mb": best["peak_device_mb"], "runs": runs}


def op_times(model: str, chunk: int) -> dict:
    """bench_profile.op_times in a fresh process, GPU command buffers off (see there)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_gpu_enable_command_buffer=").strip()
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_profile.py"), "--model", model,
                          "--chunk", str(chunk)], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def sections(size: dict):
    """(results key, title, thunk returning a list of rows or a dict), in run order:
    the headline comparisons first, so a run cut short keeps them."""
    cert, train, extra = size["cert"], size["train"], size.get("cert_extra", {})
    out = [("certification", "certification throughput",
            lambda: [bench_certify.throughput(m, **cert, sweep=size["sweep"], forms=size["forms"],
                                              **extra) for m in SMALL])]
    if size.get("resnet_certify"):
        out.append(("resnet_certify", "ResNet-18 certified at n = 100,000",
                    lambda: resnet_certify(**size["resnet_certify"])))
    if size["cert_resnet"]:
        out.append(("certification", "certification throughput, ResNet-18",
                    lambda: [bench_certify.throughput(
                        RESNET, **size["cert_resnet"], sweep=size["sweep_resnet"],
                        forms=size.get("forms_resnet", size["forms"]), **extra)]))
    out.append(("training", "training", lambda: [bench_train.throughput(m, **train) for m in SMALL]))
    if size["train_resnet"]:
        out.append(("training", "training, ResNet-18",
                    lambda: [bench_train.throughput(RESNET, **size["train_resnet"])]))
    logit_models = SMALL + ((RESNET,) if size["cert_resnet"] else ())
    out += [("logits", "logits, ours vs torch on the same noise",
             lambda: [r for m in logit_models for r in bench_certify.logit_agreement(m)]),
            ("agreement", "certified results, ours vs torch",
             lambda: [r for m in SMALL for r in bench_certify.agreement(m, **size["agree"])])]
    if size["agree_resnet"]:
        out.append(("agreement", "certified results, ours vs torch, ResNet-18",
                    lambda: bench_certify.agreement(RESNET, **size["agree_resnet"])))
    out += [("profile", "RNG share", lambda: [bench_profile.rng_share(SMALL[0], chunk=cert["chunk"],
                                                                     repeats=cert["repeats"])]),
            ("freeze", "freeze, ours frozen vs unfrozen",
             lambda: [bench_certify.freeze_gain(m, **cert) for m in SMALL]),
            ("lowpass", "DCT low-pass forms",
             lambda: [bench_certify.lowpass_forms(m, **cert) for m in SMALL]),
            ("ops", "device time per model component",
             lambda: [op_times(SMALL[0], cert["chunk"])]),
            ("attacks", "attacks", lambda: attacks(size["attack"])),
            ("memory", "memory and compile time", lambda: memory(**size["memory"]))]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(SIZES), default=None,
                        help="sizes to run (default: gpu on a GPU, else full)")
    parser.add_argument("--quick", action="store_true", help="same as --profile quick")
    parser.add_argument("--out", default=HERE, help="folder for the results files")
    parser.add_argument("--only", default=None,
                        help="comma-separated result keys to run (certification, training, logits, "
                             "agreement, profile, freeze, lowpass, ops, attacks, memory, and on a GPU "
                             "resnet_certify); with --update, they replace the rows they measure again "
                             "in the results file already in --out")
    parser.add_argument("--update", action="store_true",
                        help="start from the results file in --out (rerun sections after a fix)")
    args = parser.parse_args()
    profile = "quick" if args.quick else args.profile or ("gpu" if common.on_gpu() else "full")
    size = SIZES[profile]
    suffix = "_gpu" if common.on_gpu() else ""
    paths = (os.path.join(args.out, f"results{suffix}.json"), os.path.join(args.out, f"RESULTS{suffix}.md"))
    log = lambda what: print(f"[{datetime.datetime.now():%H:%M:%S}] {what}", flush=True)
    argv = sys.argv[1:]
    if "--out" in argv:  # where the files went is not part of how they were made
        del argv[argv.index("--out"):argv.index("--out") + 2]
    command = " ".join(["python benchmarks/run.py"] + [a for a in argv if not a.startswith("--out=")])
    now = datetime.datetime.now().isoformat(timespec="seconds")
    todo = sections(size)
    if args.only:
        keys = set(args.only.split(","))
        unknown = keys - {key for key, _, _ in todo}
        if unknown:
            parser.error(f"--only: unknown section(s) {sorted(unknown)}")
        todo = [t for t in todo if t[0] in keys]
    if args.update:
        if not os.path.exists(paths[0]):
            parser.error(f"--update: no results file {paths[0]} to update")
        with open(paths[0]) as f:
            results = json.load(f)
        if results.get("sizes") != profile:
            parser.error(f"--update: {paths[0]} holds a {results.get('sizes')} run, not {profile}")
        results["errors"] = [e for e in results.get("errors", [])
                             if e["section"] not in {t[1] for t in todo}]
        device = jax.devices()[0]
        results.setdefault("notes", []).append("")
        note = (f"Rerun on {now} with `{command}` ({device} {getattr(device, 'device_kind', '')}); "
                "sections finished: {}; every ratio still comes from one interleaved run.")
    else:
        results = {"date": now, "sizes": profile, "quick": profile == "quick", "command": command,
                   "machine": common.machine(), "errors": []}
    os.makedirs(args.out, exist_ok=True)
    finished = []
    for key, title, thunk in todo:
        log(title)
        try:
            rows = thunk()
        except Exception as error:  # keep the other sections; the exit status reports it
            traceback.print_exc()
            results["errors"].append({"section": title, "error": f"{type(error).__name__}: {error}"})
        else:
            report.merge(results, key, rows)
            finished.append(title)
            if args.update:  # a rerun cut short keeps the old rows it did not get to
                results["notes"][-1] = note.format("; ".join(finished))
        results["targets"] = report.targets(results)
        with open(paths[0], "w") as f:
            json.dump(results, f, indent=2)
        with open(paths[1], "w") as f:
            f.write(report.markdown(results))
    log(f"wrote {paths[0]} and {paths[1]}")
    if results["errors"]:
        sys.exit(f"{len(results['errors'])} section(s) failed: "
                 + "; ".join(e["section"] for e in results["errors"]))


if __name__ == "__main__":
    main()
