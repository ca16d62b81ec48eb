"""Fair tuning: the same small grid for every method, chosen on held-out training data.

At the shared budget the learning curves chose (`curves.py`), every main method is
trained once per grid point: each learning rate of the profile's grid and, for
Lipschitz-type models (every kind but the plain CNN, whose logits are small and go
through the loss's temperature), each logit temperature. A run is scored like a curve
point (`curves.train_and_score`: the training examples held out of training, never the
test images); a method's winner has the best mean of its `curves.CURVE_METRICS`.

    python experiments/tuning.py mnist runs/reproduce/mnist STEPS   # reproduce.py runs it
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import curves
import study


def grid(profile: dict, method: str) -> list[dict]:
    """The grid points of `method`: every learning rate, times every temperature for a
    Lipschitz-type model."""
    t = profile["tuning"]
    temps = (None,) if study.METHODS[method].kind == "plain" else tuple(t["temperatures"])
    return [{"learning_rate": float(lr), **({} if temp is None else {"logit_temperature": float(temp)})}
            for lr in t["learning_rates"] for temp in temps]


def apply(config, hyper: dict):
    """`config` with a grid point's values (training.learning_rate, training.logit_temperature)."""
    for name, value in hyper.items():
        config.training[name] = value
    return config


def point_dir(root, method: str, hyper: dict, steps: int) -> Path:
    name = "_".join(f"{k}{v:g}" for k, v in sorted(hyper.items()))
    return Path(root) / "tuning" / method / f"steps{int(steps)}" / name


def run_point(profile: dict, method: str, steps: int, hyper: dict, root) -> dict:
    """Trains and scores one grid point. A grid point whose config is the curve point's at
    the same budget (the method's own values) is that run: its scores are reused, not
    recomputed (same config, same seed, same result)."""
    path = point_dir(root, method, hyper, steps) / "point.json"
    if path.exists():
        return json.loads(path.read_text())
    same = curves.point_dir(root, method, steps)
    if _reusable(profile, method, steps, hyper, root):
        point = {**json.loads((same / "point.json").read_text()), "hyper": hyper,
                 "same_run_as": str(same.relative_to(root))}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(point, indent=2))
        return point
    config = apply(curves.curve_config(profile, method, steps), hyper)
    return curves.train_and_score(config, path.parent, profile["sigmas"][0],
                                  method=method, hyper=hyper)


def score(point: dict) -> float:
    """The selection score: the mean of the method's curve metrics on held-out data."""
    metrics = curves.CURVE_METRICS[point["method"]]
    return sum(point[m] for m in metrics) / len(metrics)


def run_tuning(profile: dict, root, steps: int, methods: Iterable[str] = study.MAIN, *,
               progress: bool = True, isolate: bool = False) -> dict:
    """Every (method, grid point) at `steps`. -> {method: [points]}."""
    import subprocess
    import sys

    from tqdm import tqdm
    todo = [(m, h) for m in curves.curve_methods(methods) for h in grid(profile, m)]
    with tqdm(todo, desc="tuning", unit="run", disable=not progress, dynamic_ncols=True) as bar:
        for method, hyper in bar:
            bar.set_postfix(method=method, **hyper)
            if isolate and not (point_dir(root, method, hyper, steps) / "point.json").exists() \
                    and not _reusable(profile, method, steps, hyper, root):
                subprocess.run([sys.executable, str(Path(__file__).resolve()), json.dumps(profile),
                                str(root), method, str(steps), json.dumps(hyper)], check=True)
            else:
                run_point(profile, method, steps, hyper, root)
    return load_tuning(root, methods, steps)


def _reusable(profile: dict, method: str, steps: int, hyper: dict, root) -> bool:
    """Whether the curve run at `steps` was trained with this grid point's config (compared
    with the config saved in its folder, up to logging and checkpoint cadence) and is scored."""
    same = curves.point_dir(root, method, steps)
    if not ((same / "point.json").exists() and (same / "config.json").exists()):
        return False
    config = apply(curves.curve_config(profile, method, steps), hyper)
    return (_computed(json.loads(config.to_json_best_effort()))
            == _computed(json.loads((same / "config.json").read_text())))


def _computed(config: dict) -> dict:
    """A saved config without the fields that do not change what training computes."""
    config = {**config, "training": dict(config["training"])}
    config.pop("mesh", None)
    for k in ("log_every", "checkpoint_every", "keep_checkpoints"):
        config["training"].pop(k, None)
    return config


def load_tuning(root, methods: Iterable[str] = study.MAIN, steps: int | None = None) -> dict:
    """The finished grid points under `root` (at `steps`, when given)."""
    out = {}
    for m in curves.curve_methods(methods):
        points = [json.loads(p.read_text())
                  for p in (Path(root) / "tuning" / m).glob("steps*/*/point.json")]
        points = [p for p in points if steps is None or p["steps"] == steps]
        if points:
            out[m] = sorted(points, key=lambda p: sorted(p["hyper"].items()))
    return out


def winners(results: dict) -> dict:
    """method -> the grid point with the best score (ties: the first in grid order)."""
    return {m: max(points, key=score)["hyper"] for m, points in results.items()}


def tuning_table(results: dict) -> str:
    """Markdown: every grid point's held-out scores, the winner marked."""
    best = winners(results)
    lines = ["| method | learning rate | temperature | clean | selection score | chosen |",
             "|---|---:|---:|---:|---:|---|"]
    for m, points in results.items():
        for p in points:
            h = p["hyper"]
            temp = h.get("logit_temperature")
            lines.append(f"| {study.METHODS[m].label} | {h['learning_rate']:g} | "
                         f"{'-' if temp is None else format(temp, 'g')} | {p['clean']:.1f} | "
                         f"{score(p):.1f} | {'yes' if h == best[m] else ''} |")
    return "\n".join(lines)


def _main(argv) -> None:
    """`tuning.py PROFILE ROOT STEPS`: every point; `tuning.py PROFILE_JSON ROOT METHOD STEPS
    HYPER_JSON`: one."""
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    if len(argv) == 6:
        run_point(study.profile_from_json(argv[1]), argv[3], int(argv[4]), json.loads(argv[5]),
                  argv[2])
        return
    results = run_tuning(study.check_profile(argv[1]), Path(argv[2]), int(argv[3]), isolate=True)
    print(json.dumps(winners(results), indent=2))


if __name__ == "__main__":
    import sys
    _main(sys.argv)
