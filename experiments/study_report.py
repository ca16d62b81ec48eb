"""RESULTS.md and plots of a reproduction study, generated from its workdirs.

Nothing here is typed in: every number is read from the runs' logs and
summaries (certification TSVs are re-scored from their rows), from the paper
summary's table and from the reference certification logs. Spread is over
seeds: "mean ± sd (k)" is the mean and sample standard deviation of k seeds.

Verdicts compare two methods' seed means with the standard error of the
difference, se = sqrt(sd_a^2 / k_a + sd_b^2 / k_b): "supports" when the
difference is more than 2 se in the paper's favour, "contradicts" when more
than 2 se against it, "inconclusive" otherwise; also inconclusive when a side
has fewer than 2 seeds, or when the difference is below one image's worth of
accuracy or less (100 / images evaluated, %), which no seed spread can resolve.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
from pathlib import Path
from typing import Optional

import numpy as np
import study

from hycas_jax.reporting import certify_report

RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
# The paper's published table (verbatim) and Cohen et al.'s published per-image logs.
REFERENCE = Path(__file__).resolve().parent / "reference"
CERTIFICATES = {"RS": "RS", "margin": "margin"}


# ----------------------------------------------------------------------------- collection

def _certify_rows(workdir: Path, sigma: float) -> Optional[dict]:
    from hycas_jax.evaluation import certify_paths
    paths = certify_paths(workdir, sigma)
    if not paths["summary"].exists():
        return None
    summary = json.loads(paths["summary"].read_text())
    if "certificates" not in summary:
        return None
    rows = certify_report.read_log(paths["log"])
    s = summary["settings"]
    out = {"lipschitz": s["lipschitz"]}
    curves = {"RS": (rows["predict"], rows["label"], rows["radius"])}
    if s.get("margin"):
        curves["margin"] = (rows["margin_predict"], rows["label"], rows["margin_radius"])
    for name, (prediction, label, radius) in curves.items():
        out[name] = {
            "certified": 100 * certify_report.certified_accuracy(prediction, label, radius, RADII),
            "acr": certify_report.average_certified_radius(prediction, label, radius),
            "abstain": 100 * float(np.mean(prediction < 0)),
            "n": int(len(prediction))}
    return out


def _attack(workdir: Path) -> Optional[dict]:
    path = workdir / "attack" / "attack_summary.json"
    if not path.exists():
        return None
    s = json.loads(path.read_text())
    out = {("clean", rule, 0.0): 100 * v["accuracy"] for rule, v in s["clean"].items()}
    for r in s["robust"]:
        out[(r["attack"], r["rule"], float(r["eps"]))] = 100 * r["accuracy"]
    return {"cells": out, "settings": s["settings"], "n": s["n_examples"]}


def collect(root) -> dict:
    """Everything the report needs, per (method, train sigma) over seeds."""
    root = Path(root)
    if not (root / "study.json").exists():
        raise FileNotFoundError(f"no study in {root} yet (study.json is written when the study "
                                "stage starts, after the curves and the tuning)")
    meta = json.loads((root / "study.json").read_text())
    runs, own, own_steps = {}, {}, {}
    for j in meta["jobs"]:
        job = study.Job(j["method"], j["seed"], j["train_sigma"], tuple(j["certify_sigmas"]),
                        j["attack"], j.get("steps"))
        wd = job.workdir(root)
        final = wd / "final_metrics.json"
        if not final.exists():
            continue
        rec = {"seed": job.seed, "final": json.loads(final.read_text()),
               "certify": {s: _certify_rows(wd, s) for s in job.certify_sigmas},
               "attack": _attack(wd) if job.attack else None,
               "timings": [json.loads(line) for line in
                           (wd / "study_timings.jsonl").read_text().splitlines()]
               if (wd / "study_timings.jsonl").exists() else []}
        if job.steps is None:
            runs.setdefault((job.method, job.train_sigma), []).append(rec)
        else:  # a late method at its own plateau: its own tables
            own.setdefault((job.method, job.train_sigma), []).append(rec)
            own_steps[job.method] = job.steps
    return {"meta": meta, "runs": runs, "own": own, "own_steps": own_steps}


def study_progress(root, meta) -> tuple[int, int, Optional[str]]:
    """(parts finished, parts in all, the phase of the first unfinished part or None) of the
    study's schedule (`study.schedule`), read from the workdirs: a part is finished when its
    certifications have their summaries and its attack its summary."""
    profile = study.profile_from_json(json.dumps(meta["settings"]))
    parts = study.schedule(profile, tuple(meta["methods"]))

    def finished(part) -> bool:
        wd = part.job.workdir(root)
        return (all(study.certified(wd, s) for s in part.certify_sigmas)
                and (not part.attack or (wd / "attack" / "attack_summary.json").exists()))

    done = [finished(p) for p in parts]
    pending = next((p.phase for p, ok in zip(parts, done) if not ok), None)
    return sum(done), len(parts), pending


def _own(data) -> dict:
    """The runs at the methods' own plateaus, shaped like `collect`'s main runs."""
    return {"meta": data["meta"], "runs": data.get("own", {})}


# ----------------------------------------------------------------------------- statistics

def mean_sd(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size)


def fmt(stat, digits: int = 1) -> str:
    m, sd, k = stat
    if k == 0:
        return "–"
    return f"{m:.{digits}f} ± {sd:.{digits}f} ({k})" if k > 1 else f"{m:.{digits}f} (1)"


def verdict(a, b, *, favour: str = "a", resolution: float = 0.0) -> tuple[str, float, float]:
    """(verdict, difference a - b, its standard error); see the module docstring."""
    (ma, sa, ka), (mb, sb, kb) = a, b
    if min(ka, kb) < 2:
        return "inconclusive (fewer than 2 seeds)", ma - mb, float("nan")
    d, se = ma - mb, math.sqrt(sa ** 2 / ka + sb ** 2 / kb)
    if abs(d) <= resolution + 1e-9:
        return "inconclusive (one image or less)", d, se
    if se == 0.0:
        se = 1e-12
    if d > 2 * se:
        return ("supports" if favour == "a" else "contradicts"), d, se
    if d < -2 * se:
        return ("contradicts" if favour == "a" else "supports"), d, se
    return "inconclusive", d, se


# ----------------------------------------------------------------------------- accessors

def _runs(data, method, sigma):
    return data["runs"].get((method, sigma), [])


def _train_sigma(data, method, sigma):
    """The training sigma whose runs a certification at `sigma` belongs to."""
    return sigma if study.METHODS[method].noise else 0.0


def cert_stat(data, method, sigma, certificate, field, index=None):
    vals = []
    for r in _runs(data, method, _train_sigma(data, method, sigma)):
        c = r["certify"].get(sigma)
        if c is None or certificate not in c:
            continue
        v = c[certificate][field]
        vals.append(float(v[index]) if index is not None else float(v))
    return mean_sd(vals)


def final_stat(data, method, sigma, field, scale=1.0):
    return mean_sd([r["final"][field] * scale for r in _runs(data, method, sigma)
                    if field in r["final"]])


def attack_stat(data, method, sigma, attack, rule, eps):
    return mean_sd([r["attack"]["cells"].get((attack, rule, float(eps)))
                    for r in _runs(data, method, sigma) if r["attack"]])


# ----------------------------------------------------------------------------- sections

def _methods_present(data, ablation: bool):
    return [m for m, meth in study.METHODS.items() if meth.ablation == ablation
            and any(k[0] == m for k in data["runs"])]


def _ablation_margin_note(data, methods, sigma) -> str:
    """Why the ablations have no margin certificate, with the radius it could have given."""
    caps = _margin_caps(data, methods, sigma)
    text = ("The ablations are certified by RS only (at half the cost): a margin certificate's "
            "radius is at most sqrt(2) x (logit clip) / L, here "
            + ("; ".join(f"{study.METHODS[m].label} L >= {bound:.1f}, radius <= {radius:.3f}"
                         for m, (bound, radius) in caps.items())
               or "not known yet (no run has finished)"))
    reach = [m for m, (_, radius) in caps.items() if radius >= RADII[1]]
    if not caps:
        return text + "."
    if not reach:
        return text + f": below r = {RADII[1]:g}, the smallest nonzero radius reported."
    return (text + f". For {', '.join(study.METHODS[m].label for m in reach)} that reaches "
            f"r = {RADII[1]:g}, so leaving the margin certificate out loses something there.")


def _margin_caps(data, methods, sigma) -> dict:
    """method -> (L, radius): the smallest bound L over its runs and the largest radius its
    margin certificate could give, sqrt(2) c / L with the certification's logit clip c."""
    caps = {}
    for m in methods:
        job = study.Job(m, 0, sigma, (sigma,), attack=False)
        clip = study.method_config(data["meta"]["settings"], job).certify.logit_bound
        bounds = [r["final"].get("lipschitz_bound") for r in _runs(data, m, _train_sigma(data, m, sigma))]
        bounds = [b for b in bounds if b]
        if bounds:
            caps[m] = (min(bounds), math.sqrt(2) * clip / min(bounds))
    return caps


def _overview(data, sigmas) -> str:
    if not data["runs"]:
        return "No run has finished training yet."
    lines = ["| method | trained with noise sigma | clean test accuracy (%) | "
             "network Lipschitz bound L |", "|---|---|---|---|"]
    for m in list(study.METHODS):
        for ts in sorted({k[1] for k in data["runs"] if k[0] == m}):
            meth = study.METHODS[m]
            noise = f"{ts:g}" if meth.noise else ("none (PGD)" if meth.adversarial else "none")
            lines.append(f"| {meth.label} | {noise} | "
                         f"{fmt(final_stat(data, m, ts, 'test_clean_accuracy', 100))} | "
                         f"{fmt(final_stat(data, m, ts, 'lipschitz_bound'), 3)} |")
    return "\n".join(lines)


def _cert_table(data, sigma, methods, steps: Optional[list] = None) -> str:
    """Certified accuracy per method and certificate; steps: (data, method -> its training
    steps) pairs, a row per pair and a steps column (the own-plateau table)."""
    head = " | ".join(f"r={r:g}" for r in RADII)
    if steps is None:
        lines = [f"| method | certificate | {head} | ACR | abstain (%) |",
                 "|---|---|" + "---:|" * (len(RADII) + 2)]
        rows = [(data, m, "") for m in methods]
    else:
        lines = [f"| method | steps | certificate | {head} | ACR | abstain (%) |",
                 "|---|---:|---|" + "---:|" * (len(RADII) + 2)]
        rows = [(d, m, f" {by_method[m]} |") for m in methods for d, by_method in steps]
    for data, m, col in rows:
        for cert in CERTIFICATES:
            if cert_stat(data, m, sigma, cert, "acr")[2] == 0:
                continue
            cells = [fmt(cert_stat(data, m, sigma, cert, "certified", i)) for i in range(len(RADII))]
            lines.append(f"| {study.METHODS[m].label} |{col} {cert} | " + " | ".join(cells) +
                         f" | {fmt(cert_stat(data, m, sigma, cert, 'acr'), 3)} | "
                         f"{fmt(cert_stat(data, m, sigma, cert, 'abstain'))} |")
    return "\n".join(lines)


def _attack_settings(data):
    for runs in data["runs"].values():
        for r in runs:
            if r["attack"]:
                return r["attack"]["settings"], r["attack"]["n"]
    return None, 0


def _attack_table(data, sigma) -> str:
    s, n = _attack_settings(data)
    if s is None:
        return "No attack results yet."
    eps = s["eps"]
    attacks = ["clean"] + list(data["meta"]["settings"]["attack"]["attacks"])
    lines = ["| method | attack | rule | " + " | ".join(f"eps={e:g}" for e in eps) + " |",
             "|---|---|---|" + "---:|" * len(eps)]
    for m in _methods_present(data, ablation=False):
        ts = _train_sigma(data, m, sigma)
        for attack in attacks:
            for rule in ("single", "vote"):
                if attack == "clean":
                    cells = [fmt(attack_stat(data, m, ts, "clean", rule, 0.0))] * 1
                    cells += [""] * (len(eps) - 1)
                else:
                    cells = [fmt(attack_stat(data, m, ts, attack, rule, e)) for e in eps]
                if all(c in ("–", "") for c in cells):
                    continue
                lines.append(f"| {study.METHODS[m].label} | {attack} | {rule} | "
                             + " | ".join(cells) + " |")
    return "\n".join(lines)


def _claims(data, sigmas) -> list[tuple[str, str, str, str, str, float]]:
    """(claim, comparison, HyCAS, other, verdict, HyCAS - other in points) rows."""
    rows = []
    have = {k[0] for k in data["runs"]}

    cert_images = data["meta"]["settings"]["certify"]["max_examples"]
    _, attack_images = _attack_settings(data)

    def add(claim, what, a, b, favour="a", images=cert_images):
        v, d, se = verdict(a, b, favour=favour, resolution=100.0 / max(images, 1))
        detail = "" if math.isnan(se) else f" (diff {d:+.1f}, 2 se = {2 * se:.1f})"
        rows.append((claim, what, fmt(a), fmt(b), v + detail, d))

    for hy in ("hycas", "hycas-budgeted"):
        if hy not in have:
            continue
        label = study.METHODS[hy].label
        for sigma in sigmas:
            for i, r in enumerate(RADII):
                if r > 1.0:
                    continue
                if "rs" in have:
                    add("beats RS in certified accuracy",
                        f"{label} vs RS baseline, RS certificate, sigma={sigma:g}, r={r:g}",
                        cert_stat(data, hy, sigma, "RS", "certified", i),
                        cert_stat(data, "rs", sigma, "RS", "certified", i))
            if "lipschitz" in have:
                # Like with like: one certificate (one classifier, failure probability alpha)
                # against the same certificate; the margin certificate does not use sigma.
                for cert in CERTIFICATES if sigma == sigmas[0] else ("RS",):
                    at = f" (sigma={sigma:g})" if cert == "RS" else ""
                    for i, r in enumerate(RADII[:4]):
                        add("beats deterministic Lipschitz networks in certified accuracy",
                            f"{label} vs Lipschitz baseline, {cert} certificate{at}, r={r:g}",
                            cert_stat(data, hy, sigma, cert, "certified", i),
                            cert_stat(data, "lipschitz", sigma, cert, "certified", i))
        s, _ = _attack_settings(data)
        if s is None:
            continue
        for other, name in (("at", "adversarial training"), ("rs", "randomized smoothing")):
            if other not in have:
                continue
            for e in s["eps"]:
                for rule in ("single", "vote"):
                    add(f"beats {name} in empirical robustness",
                        f"{label} vs {study.METHODS[other].label}, AutoAttack-rand, {rule} "
                        f"rule, eps={e:g}",
                        attack_stat(data, hy, sigmas[0], "autoattack", rule, e),
                        attack_stat(data, other, _train_sigma(data, other, sigmas[0]),
                                    "autoattack", rule, e), images=attack_images)
    # With the late methods at their own plateau (the study's plan, `own_plateau`): each side
    # at its own budget (its plateau, the largest budget tried, or the shared budget when it
    # had plateaued by then), first sigma only, once both sides' runs exist.
    plan = data["meta"]["settings"].get("own_plateau") or {}
    shared = data["meta"]["settings"].get("steps")
    at = lambda m: (_own(data), plan[m]) if m in plan else (data, shared)  # noqa: E731
    sigma = sigmas[0]
    for hy in ("hycas", "hycas-budgeted"):
        (dh, sh), label = at(hy), study.METHODS[hy].label
        for other, name, certs, radii in (
                ("rs", "RS", ("RS",), [r for r in RADII if r <= 1.0]),
                ("lipschitz", "deterministic Lipschitz networks", tuple(CERTIFICATES), RADII[:4])):
            do, so = at(other)
            if hy not in plan and other not in plan:
                continue  # the main comparisons above
            if hy in plan and data.get("own_steps", {}).get(hy) != sh or \
                    other in plan and data.get("own_steps", {}).get(other) != so:
                continue  # a side's own-budget runs are not there yet
            if not (cert_stat(dh, hy, sigma, certs[0], "acr")[2]
                    and cert_stat(do, other, sigma, certs[0], "acr")[2]):
                continue
            for cert in certs:
                for r in radii:
                    i = RADII.index(r)
                    add(f"beats {name} in certified accuracy, each at its own budget",
                        f"{label} ({sh} steps) vs {study.METHODS[other].label} ({so} steps), "
                        f"{cert} certificate (sigma={sigma:g}), r={r:g}",
                        cert_stat(dh, hy, sigma, cert, "certified", i),
                        cert_stat(do, other, sigma, cert, "certified", i))
    return rows


def plain_words(verdicts, diffs) -> str:
    """One sentence saying what a claim's comparisons show (`verdict` strings, HyCAS - other
    differences in points)."""
    n = len(verdicts)
    ahead = [d for v, d in zip(verdicts, diffs) if v == "supports"]
    behind = [d for v, d in zip(verdicts, diffs) if v == "contradicts"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    finite = [d for d in diffs if not math.isnan(d)]
    if len(ahead) == n:
        return f"Yes: HyCAS is ahead in all {n} comparisons, by {mean(ahead):.1f} points on average."
    if len(behind) == n:
        return f"No: HyCAS is behind in all {n} comparisons, by {-mean(behind):.1f} points on average."
    if ahead and behind:
        return (f"Mixed: HyCAS is ahead in {len(ahead)}, behind in {len(behind)} and within "
                f"noise in {n - len(ahead) - len(behind)} of {n} comparisons.")
    if ahead:
        return (f"Partly: HyCAS is ahead in {len(ahead)} of {n} comparisons (by {mean(ahead):.1f} "
                "points on average); the others are within noise.")
    if behind:
        return (f"No: HyCAS is behind in {len(behind)} of {n} comparisons (by {-mean(behind):.1f} "
                "points on average); the others are within noise.")
    tail = f" (mean difference {mean(finite):+.1f} points)" if finite else ""
    return f"Undecided: all {n} comparisons are within noise{tail}."


def _verdict_summary(rows) -> str:
    if not rows:
        return ("No comparison yet: each needs a HyCAS model and a baseline with the same "
                "certificate or attack finished.")
    by_claim = {}
    for claim, _, _, _, v, d in rows:
        by_claim.setdefault(claim, []).append((v.split(" (")[0], d))
    lines = ["| claim | supports | inconclusive | contradicts | in plain words |",
             "|---|---:|---:|---:|---|"]
    for claim, pairs in by_claim.items():
        vs = [v for v, _ in pairs]
        lines.append(f"| HyCAS {claim} | {sum(v == 'supports' for v in vs)} | "
                     f"{sum(v.startswith('inconclusive') for v in vs)} | "
                     f"{sum(v == 'contradicts' for v in vs)} | "
                     f"{plain_words(vs, [d for _, d in pairs])} |")
    return "\n".join(lines)


def paper_table(path: Path) -> Optional[tuple[list[float], list[tuple[str, str, list[str]]]]]:
    """The certified-accuracy table of the paper summary: (radii, [(method, data, cells)])."""
    if not path.exists():
        return None
    text = path.read_text()
    head = re.search(r"^Method Dataset (.*)$", text, re.M)
    if head is None:
        return None
    radii = [float(x) for x in re.findall(r"r=([\d.]+)", head.group(1))]
    rows = re.findall(r"^(.+?) (CIFAR-10|ImageNet) ((?:[\d.]+ ?){%d})$" % len(radii), text, re.M)
    return radii, [(m, d, cells.split()) for m, d, cells in rows]


def reference_table(ref_dir: Path, sigmas, radii) -> Optional[str]:
    if not ref_dir.exists():
        return None
    lines = ["| log | " + " | ".join(f"r={r:g}" for r in radii) + " | ACR | n |",
             "|---|" + "---:|" * (len(radii) + 2)]
    for sigma in sigmas:
        path = ref_dir / f"sigma_{sigma:.2f}.tsv"
        if not path.exists():
            continue
        rows = certify_report.read_log(path)
        pred, label, radius = rows["predict"], rows["label"], rows["radius"]
        acc = 100 * certify_report.certified_accuracy(pred, label, radius, radii)
        acr = certify_report.average_certified_radius(pred, label, radius)
        lines.append(f"| {ref_dir.name}/{path.name} | " + " | ".join(f"{a:.1f}" for a in acc)
                     + f" | {acr:.3f} | {len(pred)} |")
    return "\n".join(lines)


def _max_rs_radius(sigma, n, alpha) -> float:
    from scipy.stats import norm
    return sigma * float(norm.ppf(alpha ** (1.0 / n)))


def _versions() -> str:
    import flax
    import jax
    return f"jax {jax.__version__}, flax {flax.__version__}, numpy {np.__version__}"


def _groups(data):
    """((method, training sigma), runs, label suffix): the shared budget's runs, then the
    late methods' at their own plateau."""
    out = [(key, runs, "") for key, runs in sorted(data["runs"].items())]
    steps = data.get("own_steps", {})
    return out + [(key, runs, f", {steps[key[0]]} steps")
                  for key, runs in sorted(data.get("own", {}).items())]


def _total_seconds(data) -> float:
    return sum(v for _, runs, _ in _groups(data) for r in runs for t in r["timings"]
               for k, v in t.items() if k.endswith("_s"))


def stage_times(data) -> str:
    """Markdown: minutes per run of each stage (training, each certification, the attacks),
    mean over the runs of each (method, training sigma) that recorded it, and the devices
    they ran on (a stage resumed after an interruption counts its last process only)."""
    stages = sorted({k for _, runs, _ in _groups(data) for r in runs for t in r["timings"]
                     for k in t if k.endswith("_s")}, key=lambda k: (not k.startswith("train"), k))
    if not stages:
        return "No stage recorded a time."
    names = {k: k.removesuffix("_s").replace("_", " ") for k in stages}
    lines = ["| method | training sigma | runs | " + " | ".join(names[k] for k in stages)
             + " | device |", "|---|---:|---:|" + "---:|" * len(stages) + "---|"]
    for (method, sigma), runs, suffix in _groups(data):
        cells = []
        for k in stages:
            values = [t[k] for r in runs for t in r["timings"] if k in t]
            cells.append(f"{np.mean(values) / 60:.1f}" if values else "-")
        devices = sorted({t.get("device", "not recorded") for r in runs for t in r["timings"]})
        lines.append(f"| {study.METHODS[method].label}{suffix} | {sigma:g} | {len(runs)} | "
                     + " | ".join(cells) + f" | {', '.join(devices) or '-'} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots

def _figure(**kwargs):
    """A matplotlib Figure on its own Agg canvas (pyplot's global backend untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _plot_certified(data, sigma, methods, path: Path, title: str) -> bool:
    """Draws the certified-accuracy curves; False (and no file) when there is nothing to draw."""
    fig = _figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for m in methods:
        for cert, style in (("RS", "-"), ("margin", "--")):
            stats = [cert_stat(data, m, sigma, cert, "certified", i) for i in range(len(RADII))]
            if stats[0][2] == 0 or max(s[0] for s in stats) <= 0:
                continue
            mean = np.array([s[0] for s in stats])
            sd = np.nan_to_num(np.array([s[1] for s in stats]))
            line, = ax.plot(RADII, mean, style, marker="o", ms=3,
                            label=f"{study.METHODS[m].label}, {cert}")
            ax.fill_between(RADII, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
    if not ax.get_legend_handles_labels()[0]:
        path.unlink(missing_ok=True)  # no stale figure from an earlier report
        return False
    ax.set_xlabel("l2 radius r")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def _plot_attacks(data, sigma, path: Path) -> bool:
    """Draws robust accuracy against eps; False (and no file) when there is nothing to draw."""
    s, _ = _attack_settings(data)
    if s is None:
        path.unlink(missing_ok=True)
        return False
    eps = [0.0] + list(s["eps"])
    run = list(data["meta"]["settings"]["attack"]["attacks"])
    attack = "autoattack" if "autoattack" in run else run[-1]  # the strongest the study ran
    fig = _figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, rule in zip(axes, ("single", "vote")):
        for m in _methods_present(data, ablation=False):
            ts = _train_sigma(data, m, sigma)
            stats = [attack_stat(data, m, ts, "clean", rule, 0.0)] + [
                attack_stat(data, m, ts, attack, rule, e) for e in s["eps"]]
            if any(st[2] == 0 for st in stats):
                continue
            mean = np.array([st[0] for st in stats])
            sd = np.nan_to_num(np.array([st[1] for st in stats]))
            ax.errorbar(eps, mean, yerr=sd, marker="o", ms=3, capsize=3,
                        label=study.METHODS[m].label)
        ax.set_title(f"{'AutoAttack-rand' if attack == 'autoattack' else attack.upper()} "
                     f"(linf), {rule} rule")
        ax.set_xlabel("linf eps")
        ax.grid(alpha=0.3)
    if not any(ax.get_legend_handles_labels()[0] for ax in axes):
        path.unlink(missing_ok=True)
        return False
    axes[0].set_ylabel("robust accuracy (%)")
    axes[0].set_ylim(0, 100)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


# ----------------------------------------------------------------------------- the report

def _curves_section(root, out: Path, profile: dict) -> list:
    """The learning curves and the budget they chose (nothing when there are none)."""
    import curves
    found = curves.load_curves(root)
    if not found:
        return []
    budget = curves.choose_budget(found, cap=profile.get("max_steps"))
    curves.plot_curves(found, out / "learning_curves.png",
                       f"{profile['dataset']}: learning curves (held-out training examples)",
                       study_steps=budget.study_steps)
    held = profile["curves"]
    return ["## Learning curves and the budget", "",
            f"Each main method trained at up to {', '.join(str(b) for b in curves.budgets(profile))} "
            f"steps, stopping at its plateau (a run per budget, seed {held['seed']}, sigma "
            f"{profile['sigmas'][0]:g}), "
            f"scored on {held['holdout']} training examples held out of training (never the test "
            f"images): accuracy of one pass, clean and under noise at sigma "
            f"{profile['sigmas'][0]:g} (every method), and certified accuracy of "
            f"{held['certify']['max_examples']} of them at n = {held['certify']['n']}.", "",
            budget.sentence(), "", "![learning curves](learning_curves.png)", "",
            "<details><summary>Every point</summary>", "", curves.curve_table(found), "",
            "</details>", ""] + _tuning_section(root, profile)


def _tuning_section(root, profile: dict) -> list:
    """The grid, every point's held-out score and the winners (nothing when not run)."""
    import curves
    import tuning
    found = tuning.load_tuning(root, steps=profile["steps"])
    if not found:
        return []
    grid = profile["tuning"]
    return ["## Tuning", "",
            f"The same grid for every method at the shared budget ({profile['steps']} steps): "
            f"learning rate {', '.join(format(v, 'g') for v in grid['learning_rates'])}, and for "
            f"Lipschitz-type models (all but the plain CNN) logit temperature "
            f"{', '.join(format(v, 'g') for v in grid['temperatures'])}. Each run is scored on the "
            "held-out training examples (never the test images) by the mean of the metrics its "
            "learning curve uses ("
            + "; ".join(f"{study.METHODS[m].label}: {', '.join(curves.CURVE_METRICS[m])}"
                        for m in found if m in curves.CURVE_METRICS)
            + "); the best is what the study below trains with.", "",
            tuning.tuning_table(found), ""]


def write_progress_report(root, out_dir, profile_name: str, *, command: str = "",
                          methods=study.MAIN) -> Path:
    """RESULTS.md for a study whose study stage has not started yet: the learning curves
    and the tuning done so far, and what is left (the study's tables come with the runs)."""
    import curves
    import tuning
    profile = dict(study.check_profile(profile_name))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found = curves.load_curves(root)  # as the curves section shows them
    budget = curves.choose_budget(found, cap=profile.get("max_steps")) if found else None
    done = sum(len(v) for v in found.values())
    stopped = [m for m, pts in found.items() if curves.plateau(pts, curves.CURVE_METRICS[m])]
    left = sum(1 for m in curves.curve_methods(methods) if m not in stopped
               for b in curves.budgets(profile) if b > max((p["steps"] for p in found.get(m, [])),
                                                           default=0))
    steps = budget.study_steps if budget else max(curves.budgets(profile))
    profile["steps"] = steps
    tuned = sum(len(v) for v in tuning.load_tuning(root, steps=steps).values())
    seconds = sum(p["timings"].get(k, 0.0) for pts in found.values() for p in pts
                  for k in ("train_s", "evaluate_s"))
    md = [f"# Reproduction study: profile `{profile_name}` ({profile['dataset']}), in progress",
          "", "Generated by `" + (command or f"python experiments/reproduce.py --profile "
                                  f"{profile_name} --report_only") + "`; do not edit by hand.",
          "",
          f"- Generated {datetime.datetime.now().isoformat(timespec='seconds')} at commit "
          f"{study.git_commit()}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU cores, {_versions()}.",
          f"- Stage reached: learning curves, {done} points scored"
          + (f", at most {left} still to run" if left else ", complete")
          + f" ({seconds / 3600:.2f} h of compute); tuning: "
          + (f"{tuned} grid points at {steps} steps" if tuned
             else "no grid point finished yet")
          + "; the study (3 seeds on the test images) has not started, so there are no "
          "verdicts yet. Running the same command again resumes it.", ""]
    if found:
        section = _curves_section(root, out, profile)
        if left:  # the budget sentence speaks of the budgets tried so far
            i = section.index(budget.sentence())
            words = budget.sentence().replace("the largest budget tried",
                                              "the largest budget tried so far")
            section[i] = ("The shared budget is chosen when the curves are complete. So far, "
                          + words[0].lower() + words[1:])
        md += section
    else:
        md += ["No learning-curve point is finished yet.", ""]
    path = out / "RESULTS.md"
    path.write_text("\n".join(md))
    return path


def write_report(root, out_dir, *, reference: Path = REFERENCE, command: str = "") -> Path:
    """Writes RESULTS.md and the plots for the study in `root`; returns the md path."""
    data = collect(root)
    meta, profile = data["meta"], data["meta"]["settings"]
    sigmas = tuple(profile["sigmas"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cert, att = profile["certify"], profile["attack"]
    main, abl = _methods_present(data, False), _methods_present(data, True)
    done = sum(len(v) for _, v, _ in _groups(data))
    parts_done, parts, pending = study_progress(root, meta)
    state = ([] if pending is None else [
        f"- **In progress**: {parts_done} of {parts} parts of the study finished; now running "
        f"the phase '{pending}' (phases, in order: {'; '.join(study.PHASES)}). Every table "
        "and verdict uses the seeds finished so far (the count in parentheses). Running the "
        "same command again resumes it."])
    md = [f"# Reproduction study: profile `{meta['profile']}` ({profile['dataset']})"
          + (", in progress" if pending else ""), "",
          "Generated by `" + (command or f"python experiments/reproduce.py --profile "
                              f"{meta['profile']}") + "`; do not edit by hand.", "",
          f"- Generated {datetime.datetime.now().isoformat(timespec='seconds')} at commit "
          f"{study.git_commit()}; the runs were made at commit(s) "
          f"{', '.join(dict.fromkeys(meta.get('commits', []))) or 'unknown'}; "
          f"{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU cores, {_versions()}.",
          f"- Runs finished: {done} of {len(meta['jobs'])} jobs; compute time of the stages "
          f"run: {_total_seconds(data) / 60:.1f} min.", *state,
          "- Every cell is mean ± sample sd over seeds, with the number of seeds in "
          "parentheses. Certified accuracy counts an image when the certificate's prediction "
          "is correct and its radius is >= r.", ""]
    md += _curves_section(root, out, profile)
    md += ["## The budget every method shares", "",
          f"- Training: {profile['steps']} steps of batch {profile['batch_size']}, Adam, "
          + ("each method's tuned learning rate (and temperature; the tuning table above)"
             if profile.get("hyper") else f"learning rate {profile['learning_rate']:g}")
          + f" (cosine, {profile['warmup_steps']} "
          f"warmup steps), seeds {list(profile['seeds'])}. Noise-trained methods see "
          "Gaussian input noise at their sigma; PGD-AT trains on linf PGD "
          f"(eps {profile['adversarial']['eps']:g}, {profile['adversarial']['steps']} steps, "
          f"step {profile['adversarial']['step_size']:g}).",
          f"- Certification: the same test images for all (every {cert['skip']}th, "
          f"{cert['max_examples']} images), n0 = {cert['n0']}, n = {cert['n']}, "
          f"alpha = {cert['alpha']:g}. RS certifies the smoothed classifier g at sigma "
          f"(Cohen et al.); its largest possible radius at this n is "
          + ", ".join(f"{_max_rs_radius(s, cert['n'], cert['alpha']):.2f} at sigma {s:g}"
                      for s in sigmas) + ". The margin certificate certifies argmax of "
          f"the expected clipped logits (no input noise) with radius margin / (sqrt 2 L), "
          f"using {cert['margin_samples']} samples and an empirical Bernstein bound for "
          "stochastic networks and one exact pass for deterministic ones. Each certificate holds "
          "with probability >= 1 - alpha per image.",
          f"- Attacks (linf): {', '.join(att['attacks'])} at eps {list(att['eps'])}, "
          f"{att['n_iter']} iterations, EOT {att['eot_iter']} (1 on deterministic models), "
          f"{att['max_examples']} test images. Rule 'single' scores one stochastic pass "
          f"(mean of {att['repeats']} passes per image); rule 'vote' scores the majority of "
          f"{att['vote_samples']} passes on x + N(0, sigma^2) at the method's training "
          "sigma (the model itself for noise-free methods), and the attacks see that noise.",
          "", "## Methods", "", _overview(data, sigmas), ""]
    for sigma in sigmas:
        md += [f"## Certified accuracy (%), sigma = {sigma:g}", ""]
        if any(cert_stat(data, m, sigma, c, "acr")[2] for m in main for c in CERTIFICATES):
            md += [_cert_table(data, sigma, main), ""]
        else:
            md += [f"No certification at sigma {sigma:g} has finished yet.", ""]
        if _plot_certified(data, sigma, main, out / f"certified_sigma{sigma:g}.png",
                           f"{profile['dataset']}: certified accuracy, sigma = {sigma:g}"):
            md += [f"![certified accuracy, sigma {sigma:g}](certified_sigma{sigma:g}.png)", ""]
    late = data.get("own_steps", {})
    if late:
        first = sigmas[0]
        md += [f"## The late methods at their own plateau (sigma = {first:g})", "",
               "The learning curves put these methods' plateaus past the shared budget of "
               f"{profile['steps']} steps; the study also trains them to their own plateau "
               "(the largest budget tried, for a curve that never flattened), with the values "
               "tuned at the shared budget, on every seed, and certifies them as above. Each "
               "method's rows at the shared budget come first, then its rows at its own "
               "budget. The comparisons 'each at its own budget' in the verdicts below use "
               "these runs.", "",
               _cert_table(None, first, list(late),
                           steps=[(data, {m: profile["steps"] for m in late}), (_own(data), late)]),
               ""]
    if abl:
        md += [f"## Ablations (sigma = {sigmas[0]:g}), next to full HyCAS", "",
               _ablation_margin_note(data, abl, sigmas[0]), "",
               _cert_table(data, sigmas[0], ["hycas"] + abl), ""]
        if _plot_certified(data, sigmas[0], ["hycas"] + abl,
                           out / f"ablations_sigma{sigmas[0]:g}.png",
                           f"{profile['dataset']}: ablations, sigma = {sigmas[0]:g}"):
            md += [f"![ablations](ablations_sigma{sigmas[0]:g}.png)", ""]
    md += [f"## Empirical robustness (%), linf, methods trained at sigma = {sigmas[0]:g} "
           "(or without noise)", "", _attack_table(data, sigmas[0]), ""]
    if _plot_attacks(data, sigmas[0], out / "robust_accuracy.png"):
        md += ["![robust accuracy](robust_accuracy.png)", ""]
    claims = _claims(data, sigmas)
    md += ["## Do our numbers support the paper's claims?", "",
           "Each comparison below is HyCAS against one baseline under identical settings; "
           "the rule is in the module docstring of `experiments/study_report.py` "
           "(difference of seed means against twice its standard error).", "",
           _verdict_summary(claims), ""]
    if claims:
        md += ["<details><summary>Every comparison</summary>", "",
               "| claim | comparison | HyCAS | baseline | verdict |", "|---|---|---|---|---|"]
        md += [f"| {c} | {w} | {a} | {b} | {v} |" for c, w, a, b, v, _ in claims]
        md += ["", "</details>", ""]
    md += ["## Compute time per stage (minutes per run)", "",
           f"On the machine named at the top; {_total_seconds(data) / 3600:.2f} h in all. A "
           "stage that a resumed run finished in several invocations counts each part.", "",
           stage_times(data), ""]
    md += ["## Next to the paper and the original RS logs", ""]
    paper = paper_table(reference / "hycas_paper_table.txt")
    if paper:
        radii, rows = paper
        md += ["The paper's table (certified accuracy %, sigma = 0.50), parsed from "
               "`experiments/reference/hycas_paper_table.txt`:", "",
               "| method | data | " + " | ".join(f"r={r:g}" for r in radii) + " |",
               "|---|---|" + "---:|" * len(radii)]
        md += [f"| {m} | {d} | " + " | ".join(cells) + " |" for m, d, cells in rows]
        cap = _max_rs_radius(0.5, 100_000, 1e-3)
        md += ["", f"With Cohen et al.'s certification budget (n = 100,000, alpha = 0.001) an RS "
               f"certificate at sigma = 0.5 cannot exceed radius 0.5 * Phi^-1(alpha^(1/n)) = "
               f"{cap:.2f}, so nonzero entries at r = 2 for sigma = 0.5 cannot be RS "
               "certificates at that budget."]
        ours = [(m, cert) for m in main for cert in CERTIFICATES
                if 0.5 in sigmas and cert_stat(data, m, 0.5, cert, "acr")[2]]
        if ours:
            md += ["", f"Ours at sigma = 0.5 on {profile['dataset']} at the paper's radii "
                   "(a different data set and a far smaller budget: compare orderings, "
                   "not levels):", "",
                   "| method | certificate | " + " | ".join(f"r={r:g}" for r in radii) + " |",
                   "|---|---|" + "---:|" * len(radii)]
            for m, cert in ours:
                cells = []
                for r in radii:
                    i = RADII.index(r) if r in RADII else None
                    cells.append(fmt(cert_stat(data, m, 0.5, cert, "certified", i))
                                 if i is not None else "–")
                md.append(f"| {study.METHODS[m].label} | {cert} | " + " | ".join(cells) + " |")
    else:
        md += [f"The paper's table was not found ({reference}), so it is not shown."]
    ref = reference_table(reference / "cohen2019_cifar10_resnet110", sigmas, RADII)
    md += [""]
    if ref:
        md += ["Cohen et al.'s own per-image CIFAR-10 ResNet-110 logs, re-scored here with the "
               "same code as our runs:", "", ref, ""]
    else:
        md += ["The reference logs were not found beside the repository, so they are not "
               "shown.", ""]
    md += ["## Files", "",
           f"Per-run workdirs are under `{root}/runs/<method>/<sigma>/<seed>/` (a late "
           "method at its own plateau: `runs/<method>/steps<N>/<sigma>/<seed>/`): checkpoints, "
           "`final_metrics.json`, `certify_sigma*.tsv` (one row per image, Cohen's format "
           "plus margin columns) and `attack/attacks.jsonl`.", ""]
    path = out / "RESULTS.md"
    path.write_text("\n".join(md))
    (out / "results.json").write_text(json.dumps(_json(data, sigmas), indent=2))
    return path


def _json(data, sigmas) -> dict:
    """The per-seed numbers behind the tables."""
    out = {}
    for (m, ts), runs, suffix in _groups(data):
        for r in runs:
            out.setdefault(m, {}).setdefault(f"train_sigma={ts:g}{suffix}", []).append({
                "seed": r["seed"], "final": r["final"],
                "certify": {f"{s:g}": {k: ({kk: (vv.tolist() if hasattr(vv, "tolist") else vv)
                                            for kk, vv in v.items()} if isinstance(v, dict) else v)
                                       for k, v in c.items()}
                            for s, c in r["certify"].items() if c},
                "attack": {f"{a}|{rule}|{e:g}": v for (a, rule, e), v in
                           r["attack"]["cells"].items()} if r["attack"] else None})
    return out
