"""Reading per-image certification logs (Cohen et al.'s TSV format), certified accuracy,
ACR, tables and plots. The logs are written by `hycas_jax.runtime.records.certify_log`.

A log is a tab-separated file whose header starts with Cohen et al.'s columns
`idx label predict radius correct time` (predict = -1 on abstain, time in
seconds or as `H:MM:SS.ffffff`) and may carry extra columns (e.g. `pA`,
`count`, `margin_predict`, `margin_radius`). Floats are written with `repr`,
so radii survive a round trip at full float64 precision.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hycas_jax.runtime import files
from hycas_jax.runtime.records import COHEN_COLUMNS

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
_INT_COLUMNS = {"idx", "label", "predict", "correct", "count", "margin_predict"}

# (prediction int (N,), label int (N,), radius float (N,)) for one certified classifier.
Curve = tuple[np.ndarray, np.ndarray, np.ndarray]


def _parse_time(text: str) -> float:
    """Seconds from `12.3` or from Python's timedelta string `H:MM:SS.ffffff`."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = 60.0 * seconds + float(part)
    return seconds


def _parse_column(name: str, cells: list[str]) -> np.ndarray:
    if name in _INT_COLUMNS:
        return np.array([int(c) for c in cells], np.int64)
    if name == "time":
        return np.array([_parse_time(c) for c in cells], np.float64)
    try:
        return np.array([float(c) for c in cells], np.float64)
    except ValueError:
        return np.array(cells)


def read_log(path) -> dict[str, np.ndarray]:
    """Reads a log into columns: int64 for ids/classes, float64 for numbers.

    A truncated last line is ignored; any other malformed row is an error.
    """
    data = files.read_bytes(path)
    lines = data[:data.rfind(b"\n") + 1].decode().splitlines()  # a torn last row is not read
    if not lines:
        raise ValueError(f"log {path} is empty")
    header = lines[0].split("\t")
    if tuple(header[:len(COHEN_COLUMNS)]) != COHEN_COLUMNS:
        raise ValueError(f"log {path} header {header} does not start with {COHEN_COLUMNS}")
    rows = [line.split("\t") for line in lines[1:]]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"log {path} line {number} has {len(row)} fields, "
                             f"expected {len(header)}")
    return {name: _parse_column(name, [r[i] for r in rows]) for i, name in enumerate(header)}


def certified_accuracy(prediction, label, radius,
                       radii: Sequence[float] = DEFAULT_RADII) -> np.ndarray:
    """Fraction of points certified correct at each radius, float64 (R,).

    A point counts at radius r when its prediction equals its label (abstain,
    -1, is wrong) and its certified radius is >= r.
    """
    correct = np.asarray(prediction) == np.asarray(label)
    radius = np.asarray(radius, np.float64)
    return np.array([np.mean(correct & (radius >= r)) for r in radii], np.float64)


def average_certified_radius(prediction, label, radius) -> float:
    """ACR: mean over points of radius * [certified prediction == label]."""
    correct = np.asarray(prediction) == np.asarray(label)
    return float(np.mean(np.where(correct, np.asarray(radius, np.float64), 0.0)))


def markdown_table(curves: Mapping[str, Curve], radii: Sequence[float] = DEFAULT_RADII) -> str:
    """Certified accuracy (%) at `radii` and ACR, one row per named curve."""
    lines = ["| certificate | " + " | ".join(f"r={r:g}" for r in radii) + " | ACR |",
             "|---" * (len(radii) + 2) + "|"]
    for name, (prediction, label, radius) in curves.items():
        accuracy = certified_accuracy(prediction, label, radius, radii)
        acr = average_certified_radius(prediction, label, radius)
        lines.append(f"| {name} | " + " | ".join(f"{100 * a:.1f}" for a in accuracy)
                     + f" | {acr:.3f} |")
    return "\n".join(lines)


def log_curves(log: Mapping[str, np.ndarray]) -> dict[str, Curve]:
    """The curves a log holds: `RS` always, `margin` when it has margin columns."""
    curves = {"RS": (log["predict"], log["label"], log["radius"])}
    if "margin_predict" in log and "margin_radius" in log:
        curves["margin"] = (log["margin_predict"], log["label"], log["margin_radius"])
    return curves


def plot_certified_accuracy(curves: Mapping[str, Curve], path, *,
                            title: str = "", max_radius: float | None = None) -> None:
    """Saves certified accuracy vs radius (one line per curve) as a PNG.

    Uses the Agg canvas directly, so it never touches pyplot's global backend.
    """
    largest = max(float(np.max(r, initial=0.0)) for _, _, r in curves.values())
    grid = np.linspace(0.0, max_radius or max(largest, 0.25) * 1.05, 400)
    figure = Figure(figsize=(5, 3.5))
    axes = figure.add_subplot()
    for name, (prediction, label, radius) in curves.items():
        axes.plot(grid, certified_accuracy(prediction, label, radius, grid), label=name)
    axes.set(xlabel="l2 radius", ylabel="certified accuracy", ylim=(0, 1), title=title)
    axes.legend()
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))


def hybrid_report(certificates: Sequence, labels, *,
                  radii: Sequence[float] = DEFAULT_RADII, alpha_budget: float | None = None) -> str:
    """Markdown table of certified accuracy, one row per `hycas_jax.certification.Certificate`,
    naming its classifier.

    The failure probabilities add; with `alpha_budget` (e.g. 1e-3 split as
    5e-4 + 5e-4) a total above the budget is a ValueError.
    """
    total = sum(c.alpha for c in certificates)
    if alpha_budget is not None and total > alpha_budget * (1.0 + 1e-12):
        raise ValueError(f"alpha_budget {alpha_budget} is exceeded: the certificates' "
                         f"alphas add up to {total}; split it among them")
    table = markdown_table({f"{c.method} of [{c.classifier}], alpha = {c.alpha:g}":
                            (c.prediction, labels, c.radius) for c in certificates}, radii)
    note = f"All rows hold together with probability >= 1 - {total:g} per image."
    distinct = len({c.classifier for c in certificates})
    if distinct > 1:
        note += (f" The rows certify {distinct} different classifiers; each number is a "
                 "certificate of the classifier its row names only.")
    return f"{table}\n\n{note}"


def abstain_table(curves: Mapping[str, tuple[float, Curve]]) -> str:
    """Abstention rate and alpha per certificate (name -> (alpha, curve))."""
    lines = ["| certificate | abstain (%) | alpha per image |", "|---|---|---|"]
    for name, (alpha, (prediction, _, _)) in curves.items():
        rate = 100 * np.mean(prediction < 0) if len(prediction) else float("nan")
        lines.append(f"| {name} | {rate:.1f} | {alpha:g} |")
    if len(curves) > 1:
        lines.append("\nRS and margin certify different classifiers; each row holds with "
                     "probability >= 1 - alpha per image, both together >= 1 - 2 alpha.")
    return "\n".join(lines)
