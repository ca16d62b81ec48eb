"""Learning curves: how many training steps each method needs before more stop helping.

Every main method is trained at doubling step budgets (one seed, the profile's first
sigma; each budget its own run, with the learning-rate schedule of that budget, so a
point is "the method trained for that many steps"). Each run keeps
`dataset.holdout` training examples out of training and is scored on them, never on
the test images: clean and noisy accuracy of one pass (noisy: at the profile's first
sigma, for every method), and the certified accuracy at r = 0.25 and 0.5 of randomized
smoothing and of the margin certificate.

A method has *plateaued* at budget s when doubling s gained less than `tolerance`
points on every one of its metrics (`CURVE_METRICS`): training longer than s no longer
helps. Its curve stops once that doubling is seen (at 2 s). The study's shared budget is
the smallest budget at which every method has plateaued (`choose_budget`); a method that
never plateaus within the budgets tried is named, with its own last budget.

    python experiments/curves.py mnist runs/reproduce/mnist     # reproduce.py runs it first
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Iterable, Optional

import study

RADII = (0.25, 0.5)
# The metrics whose plateau sets each method's budget: its accuracy and the certificate it
# is meant for (noise-trained: randomized smoothing; deterministic Lipschitz: the margin
# certificate; adversarial training: its accuracy, the curves measure no attack).
CURVE_METRICS = {
    "hycas": ("clean", "RS r=0.25", "RS r=0.5"),
    "hycas-budgeted": ("clean", "RS r=0.25", "RS r=0.5"),
    "rs": ("clean", "RS r=0.25", "RS r=0.5"),
    "lipschitz": ("clean", "margin r=0.25", "margin r=0.5"),
    "at": ("clean",),
}


def budgets(profile: dict) -> tuple:
    return tuple(profile["curves"]["budgets"])


def curve_config(profile: dict, method: str, steps: int):
    """The training config of one curve point: the study's config of the method (first
    sigma, the curve seed) trained for `steps`, with the validation split held out."""
    c_ = profile["curves"]
    m = study.METHODS[method]
    sigma = profile["sigmas"][0] if m.noise else 0.0
    job = study.Job(method, c_["seed"], sigma, (profile["sigmas"][0],), attack=False)
    c = study.method_config(profile, job)
    c.training.num_steps = int(steps)
    c.training.warmup_steps = min(c.training.warmup_steps, max(int(steps) // 10, 1))
    c.training.checkpoint_every = study.checkpoint_every(int(steps))
    c.training.log_every = max(min(50, int(steps)), 1)
    c.dataset.holdout = int(c_["holdout"])
    c.certify.update(c_["certify"])
    return c


def point_dir(root: Path, method: str, steps: int) -> Path:
    return Path(root) / "curves" / method / f"steps{int(steps)}"


def train_and_score(config, wd: Path, sigma: float, **info) -> dict:
    """Trains `config` in `wd` and scores it on the held-out split (each stage skipped when
    done); the scores, with `info`, are kept in `point.json` beside the run."""
    from hycas_jax import training
    from hycas_jax.evaluation import CertifySettings, certify_paths, certify_workdir
    from hycas_jax.reporting import certify_report

    path = Path(wd) / "point.json"
    if path.exists():
        return json.loads(path.read_text())
    timings = {}
    start = time.perf_counter()
    if not (Path(wd) / "final_metrics.json").exists():
        training.train(config, str(wd), progress=False)
    timings["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    # Noisy accuracy at the curves' sigma for every method, noise-trained or not.
    acc = training.evaluate_workdir(str(wd), split="holdout", sigma=sigma)
    certify_workdir(wd, CertifySettings.of_workdir(wd, sigma=sigma, margin=True),
                    split="holdout", progress=False)
    timings["evaluate_s"] = time.perf_counter() - start
    timings["device"] = study.device_name()
    rows = certify_report.read_log(certify_paths(wd, sigma)["log"])
    point = {**info, "steps": int(config.training.num_steps), "sigma": sigma,
             "clean": 100 * acc["holdout_clean_accuracy"],
             "noisy": 100 * acc["holdout_noisy_accuracy"], "noisy_sigma": sigma,
             "images": int(len(rows["idx"])),
             "timings": timings}
    for name, pred, radius in (("RS", rows["predict"], rows["radius"]),
                               ("margin", rows["margin_predict"], rows["margin_radius"])):
        values = certify_report.certified_accuracy(pred, rows["label"], radius, RADII)
        point.update({f"{name} r={r:g}": 100 * float(v) for r, v in zip(RADII, values)})
    path.write_text(json.dumps(point, indent=2))
    return point


def run_point(profile: dict, method: str, steps: int, root: Path) -> dict:
    """Trains and scores one curve point (`train_and_score`)."""
    return train_and_score(curve_config(profile, method, steps), point_dir(root, method, steps),
                           profile["sigmas"][0], method=method)


def curve_methods(methods: Iterable[str]) -> tuple:
    return tuple(m for m in study.check_methods(methods) if m in CURVE_METRICS)


def run_curves(profile: dict, root, methods: Iterable[str] = study.MAIN, *,
               progress: bool = True, isolate: bool = False, tolerance: float = 1.0) -> dict:
    """The (method, budget) points, smallest budgets first (so an interrupted run already
    has the start of every curve); a method stops once its plateau is seen (`plateau`
    at `tolerance`, which `choose_budget` must then use too): larger budgets could not
    change the budget chosen, only cost.
    -> {method: [points by budget]}. isolate: each point in a fresh Python process (see
    `study.run_study`)."""
    import subprocess
    import sys

    from tqdm import tqdm
    methods = curve_methods(methods)
    with tqdm(total=len(budgets(profile)) * len(methods), desc="curves", unit="run",
              disable=not progress, dynamic_ncols=True) as bar:
        for steps in budgets(profile):
            done = load_curves(root, methods)
            for method in methods:
                bar.set_postfix(method=method, steps=steps)
                if plateau(done.get(method, []), CURVE_METRICS[method], tolerance) is not None:
                    pass  # flat already: no larger budget for this method
                elif (point_dir(root, method, steps) / "point.json").exists():
                    pass  # scored before
                elif isolate:
                    subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                    json.dumps(profile), str(root), method, str(steps)],
                                   check=True)
                else:
                    run_point(profile, method, steps, Path(root))
                bar.update()
    return load_curves(root, methods)


def load_curves(root, methods: Iterable[str] = study.MAIN) -> dict:
    """The finished points under `root` (none is computed)."""
    out = {}
    for m in curve_methods(methods):
        points = [json.loads(p.read_text()) for p in (Path(root) / "curves" / m).glob("steps*/point.json")]
        if points:
            out[m] = sorted(points, key=lambda p: p["steps"])
    return out


def plateau(points: list, metrics: Iterable[str], tolerance: float = 1.0) -> Optional[int]:
    """The smallest budget s at which the curve has reached its plateau: doubling s (to the
    next budget) gained less than `tolerance` points on every metric. None when no doubling
    tried did (the curve may still be rising at the largest budget)."""
    for prev, cur in zip(points, points[1:]):
        if all(cur[k] - prev[k] < tolerance for k in metrics):
            return prev["steps"]
    return None


def _and(words: list) -> str:
    return ", ".join(words[:-1]) + (" and " if len(words) > 1 else "") + words[-1]


@dataclasses.dataclass(frozen=True)
class Budget:
    steps: Optional[int]           # the shared budget (None: some method never plateaued)
    per_method: dict               # method -> its own plateau budget (None: not reached)
    tolerance: float
    largest: int = 0               # the largest budget tried (the fallback)
    last_gain: dict = dataclasses.field(default_factory=dict)  # unflattened method -> (metric, points)
    cap: Optional[int] = None      # the most steps the study trains for (the profile's max_steps)

    @property
    def study_steps(self) -> int:
        """What the study trains every method for: the shared budget (the largest budget
        tried when there is none), at most `cap`."""
        steps = self.steps or self.largest  # 0: no curve at all
        return min(steps, self.cap) if self.cap and steps else steps

    def own_plateaus(self) -> dict:
        """method -> the steps of its own plateau (the largest budget tried, when it has
        none), for the methods whose plateau lies past `study_steps`: the study trains them
        that long too."""
        own = {m: s or self.largest for m, s in self.per_method.items()}
        return {m: s for m, s in own.items() if s > self.study_steps}

    def sentence(self) -> str:
        """The budget and its justification, in words."""
        own = ", ".join(f"{m} {'not within ' + 'the budgets tried' if s is None else s}"
                        for m, s in self.per_method.items())
        if self.steps is None:
            late = [m for m, s in self.per_method.items() if s is None]
            gains = "; ".join(f"{m} {g:+.1f} points of {k}" for m, (k, g) in self.last_gain.items())
            text = (f"No shared budget: {', '.join(late)} still gained {self.tolerance:g} point "
                    f"or more over the last doubling tried ({gains}). Each method's plateau: "
                    f"{own}.")
        else:
            text = (f"Shared budget: {self.steps} steps, the smallest at which every method has "
                    f"reached its plateau (the budget whose doubling gained less than "
                    f"{self.tolerance:g} point on each of the method's metrics). Each method's "
                    f"plateau: {own}.")
        steps = self.steps or self.largest
        if self.cap and self.cap < steps:
            flat = [m for m, s in self.per_method.items() if s is not None and s <= self.cap]
            rising = [m for m in self.per_method if m not in flat]
            late = self.own_plateaus()
            return (text + f" The 3-seed study is capped at {self.cap} steps for compute (the "
                    "profile's max_steps; every doubling doubles its training time), so it "
                    f"trains every method for {self.cap} steps: "
                    + (f"{_and(flat)} had plateaued by then; " if flat else "")
                    + f"{_and(rising)} had not. Each method's curve up to {self.largest} "
                    "steps is in the table below. The study also trains "
                    + _and([f"{m} for {s} steps ("
                            + ("its plateau" if self.per_method[m] else "the largest budget tried")
                            + ")" for m, s in late.items()])
                    + f" on every seed and certifies {'it' if len(late) == 1 else 'them'} at "
                    "the first sigma.")
        if self.steps is None:
            return text + (f" The study trains every method for the largest budget tried, "
                           f"{self.largest} steps.")
        return text


def choose_budget(curves: dict, tolerance: float = 1.0, cap: Optional[int] = None) -> Budget:
    per = {m: plateau(points, CURVE_METRICS[m], tolerance) for m, points in curves.items()}
    steps = None if not per or any(s is None for s in per.values()) else max(per.values())
    largest = max((p["steps"] for points in curves.values() for p in points), default=0)
    gains = {}
    for m, points in curves.items():
        if per[m] is None and len(points) >= 2:
            prev, cur = points[-2], points[-1]
            k = max(CURVE_METRICS[m], key=lambda k: cur[k] - prev[k])
            gains[m] = (k, cur[k] - prev[k])
    return Budget(steps, per, tolerance, largest, gains, cap)


def _steps_label(s: int) -> str:
    return f"{s / 1000:g}k" if s >= 1000 else str(s)


def plot_curves(curves: dict, path: Path, title: str = "", study_steps: Optional[int] = None) -> None:
    """One panel per metric, one line per method, steps on a log axis; a dashed line at
    the budget the study trains for, when given."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    metrics = ("clean", "noisy", "RS r=0.25", "RS r=0.5", "margin r=0.25", "margin r=0.5")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for ax, metric in zip(axes.ravel(), metrics):
        for method, points in curves.items():
            steps = [p["steps"] for p in points]
            ax.plot(steps, [p[metric] for p in points], marker="o", label=study.METHODS[method].label)
        ax.set_xscale("log", base=2)
        steps = sorted({p["steps"] for points in curves.values() for p in points})
        ax.set_xticks(steps, [_steps_label(s) for s in steps])
        ax.minorticks_off()
        if study_steps:
            ax.axvline(study_steps, color="0.4", linestyle="--", linewidth=1,
                       label=f"the study's budget ({study_steps:,} steps)")
        ax.set_title(f"{metric} (%)")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("training steps")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curve_table(curves: dict) -> str:
    """Markdown: every point's metrics."""
    cols = ("clean", "noisy", "RS r=0.25", "RS r=0.5", "margin r=0.25", "margin r=0.5")
    lines = ["| method | steps | " + " | ".join(cols) + " | train s | scoring s | device |",
             "|---|---:|" + "---:|" * len(cols) + "---:|---:|---|"]
    for method, points in curves.items():
        for p in points:
            t = p["timings"]
            lines.append(f"| {study.METHODS[method].label} | {p['steps']} | "
                         + " | ".join(f"{p[c]:.1f}" for c in cols)
                         + f" | {t.get('train_s', float('nan')):.0f} | "
                         f"{t.get('evaluate_s', float('nan')):.0f} | {t.get('device', '-')} |")
    return "\n".join(lines)


def _main(argv) -> None:
    """`curves.py PROFILE ROOT`: every point; `curves.py PROFILE_JSON ROOT METHOD STEPS`: one."""
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    if len(argv) == 5:
        run_point(study.profile_from_json(argv[1]), argv[3], int(argv[4]), Path(argv[2]))
        return
    curves = run_curves(study.check_profile(argv[1]), Path(argv[2]), isolate=True)
    print(choose_budget(curves, cap=study.check_profile(argv[1]).get("max_steps")).sentence())


if __name__ == "__main__":
    import sys
    _main(sys.argv)
