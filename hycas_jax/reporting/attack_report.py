"""Robust-accuracy statistics, table and plot from the unit records of
`attack_run` (one record per (attack, eps, batch, rule), per-image scores).

'single' records hold `correct`, the passes (of `repeats`) that classified each
image correctly; 'vote' records hold `right` (the majority vote is the label)
and `decided` (the vote's binomial test separated its top two classes).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hycas_jax.certification import stats

TABLE_FILE, PLOT_FILE, SUMMARY_FILE = "robust_accuracy.md", "robust_accuracy.png", "attack_summary.json"


def single_stats(correct, repeats: int, confidence: float = 0.95) -> dict:
    """Accuracy of one stochastic pass, pooled over images and passes.

    stderr is the Monte Carlo standard error given the images: per image the
    unbiased p(1 - p) / (R - 1) estimate of the variance of its mean over R
    passes (nan when R = 1). ci: Clopper-Pearson on the pooled passes.
    """
    correct = np.asarray(correct, np.int64)
    n = correct.size
    p = correct / repeats
    stderr = np.sqrt(np.sum(p * (1 - p)) / (repeats - 1)) / n if repeats > 1 else float("nan")
    return {"n": int(n), "accuracy": float(p.mean()), "stderr": float(stderr),
            "ci": list(stats.clopper_pearson(int(correct.sum()), n * repeats, confidence))}


def vote_stats(right, decided) -> dict:
    """Vote accuracy; lower / upper count undecided votes as wrong / right."""
    right, decided = np.asarray(right, bool), np.asarray(decided, bool)
    return {"n": int(right.size), "accuracy": float(right.mean()),
            "accuracy_lower": float((right & decided).mean()),
            "accuracy_upper": float((right | ~decided).mean()),
            "abstain": float((~decided).mean())}


def _stats(records, s) -> dict:
    """Pools the per-image scores of one (attack, eps, rule) over its batches."""
    if records[0]["rule"] == "single":
        return single_stats(np.concatenate([r["correct"] for r in records]), s["repeats"])
    return vote_stats(np.concatenate([r["right"] for r in records]),
                      np.concatenate([r["decided"] for r in records]))


def _cell(stats: dict) -> str:
    acc = 100 * stats["accuracy"]
    if "stderr" in stats:
        return f"{acc:.1f} ± {100 * stats['stderr']:.1f}"
    return f"{acc:.1f} [{100 * stats['accuracy_lower']:.1f}, {100 * stats['accuracy_upper']:.1f}]"


def _rule_notes(s) -> dict:
    """What each rule scored, in words (every report names its rule)."""
    sigma = s["vote_sigma"]
    return {
        "single": f"one stochastic forward pass; mean over {s['repeats']} passes per image "
                  "± Monte Carlo stderr",
        "vote": f"majority vote of m={s['vote_samples']} passes on x + N(0, sigma^2), "
                f"sigma={sigma:g} ({s['vote_sigma_source']}); attacks "
                f"{'see this noise' if sigma else 'target the model itself'}; "
                f"[lower, upper] count undecided votes (alpha={s['alpha']:g}) wrong / right",
    }


def _table(summary) -> str:
    s, eps = summary["settings"], summary["settings"]["eps"]
    lines = [f"Robust accuracy (%), {s['norm']} attacks, n={summary['n_examples']} "
             f"{s['dataset']} test images, checkpoint step {s['step']}, n_iter={s['n_iter']}, "
             f"eot_iter={s['eot_iter']} (1 against deterministic targets).", ""]
    lines += [f"- {rule}: {note}; clean {_cell(summary['clean'][rule])}"
              for rule, note in summary["rules"].items()]
    lines += ["", "| attack | rule | " + " | ".join(f"eps={e:g}" for e in eps) + " |",
              "|---|---|" + "---:|" * len(eps)]
    rows = {}
    for r in summary["robust"]:
        rows.setdefault((r["label"], r["rule"]), {})[r["eps"]] = _cell(r)
    lines += [f"| {label} | {rule} | " + " | ".join(cells[e] for e in eps) + " |"
              for (label, rule), cells in rows.items()]
    return "\n".join(lines)


def summarize(records, s, *, model_stochastic: bool, workdir: str) -> dict:
    """The summary dict (JSON-ready) of one run's records."""
    groups = {}
    for r in records:
        groups.setdefault((r["attack"], r["eps"], r["rule"]), []).append(r)
    rules = list(dict.fromkeys(r["rule"] for r in records))
    summary = {
        "workdir": workdir, "model_stochastic": model_stochastic,
        "settings": {k: v for k, v in s.items() if k != "units_run"},
        "n_examples": sum(len(r["index"]) for r in groups[("clean", None, rules[0])]),
        "rules": {rule: _rule_notes(s)[rule] for rule in rules},
        "clean": {rule: _stats(groups[("clean", None, rule)], s) for rule in rules},
        "robust": [{"attack": attack, "label": rs[0]["label"], "rule": rule, "eps": eps,
                    **_stats(rs, s)}
                   for (attack, eps, rule), rs in groups.items() if attack != "clean"],
        "units_run": s["units_run"],
    }
    summary["table"] = _table(summary)
    return summary


def _plot(summary, path: Path) -> None:
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    curves = {}
    for r in summary["robust"]:
        curves.setdefault(f"{r['label']} ({r['rule']})", []).append(r)
    for name, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["eps"])
        eps = [r["eps"] for r in rows]
        low = [100 * (r["ci"][0] if "ci" in r else r["accuracy_lower"]) for r in rows]
        high = [100 * (r["ci"][1] if "ci" in r else r["accuracy_upper"]) for r in rows]
        line, = ax.plot(eps, [100 * r["accuracy"] for r in rows], marker="o", label=name)
        ax.fill_between(eps, low, high, color=line.get_color(), alpha=0.15)
    s = summary["settings"]
    ax.set(xlabel=f"eps ({s['norm']})", ylabel="robust accuracy (%)", ylim=(0, 100),
           title=f"{s['dataset']}, n={summary['n_examples']}, step {s['step']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write(out: Path, summary: dict) -> None:
    """Writes the summary JSON, the markdown table and the plot into ``out``
    (each via a temporary file, so a kill never leaves a half-written one)."""
    for name, text in ((SUMMARY_FILE, json.dumps(summary, indent=2)),
                       (TABLE_FILE, summary["table"] + "\n")):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    _plot(summary, out / (PLOT_FILE + ".tmp.png"))
    os.replace(out / (PLOT_FILE + ".tmp.png"), out / PLOT_FILE)
