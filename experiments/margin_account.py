"""Where a margin certificate's radius goes, for a trained run: bound against gain.

    python experiments/margin_account.py --workdir runs/mnist_lipschitz [--images 16]

For the trained model of WORKDIR it measures, on test images:

* the whole network: `network_bound` against the largest gain gradient ascent
  finds (`hycas_jax.evaluation.tightness.largest_gain`, over input pairs, with
  a few noise keys for a stochastic model): how far the guaranteed bound is
  above what the network really does;
* each unit (conv block and its activation) and the head: its guaranteed bound
  against the largest gain found on the features the unit really receives;
* the margin itself: the median logit margin and the median per-pair constant
  the certificate divides it by;
* for a stochastic model, the Monte Carlo slack: the margin estimate minus its
  lower confidence bound with the run's margin settings (`--margin_samples`,
  the clip its certification summary recorded), and the radius it costs;
* the learning curve of the run (training-batch clean accuracy, loss and the
  guaranteed bound against steps, from metrics.jsonl), as a plot.

Writes WORKDIR/margin_account.json and margin_curves.png, and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hycas_jax import data, functional, training
from hycas_jax.certification import margin
from hycas_jax.config import data_kwargs
from hycas_jax.evaluation.tightness import largest_gain
from hycas_jax.nn import frozen, lipschitz


def _features(model, x, key, upto: int):
    """The input of unit `upto` (the normalized image for 0), with the model's key split."""
    feat_key, _ = jax.random.split(key)
    h = model.normalize(x)
    keys = jax.random.split(feat_key, len(model.units))
    for unit, k in list(zip(model.units, keys))[:upto]:
        h = model.activation(unit(h, k))
    return h, keys


def _monte_carlo_slack(model, config, workdir, x, bound: float, margin_samples: int) -> dict:
    """Estimate minus lower bound of the certified margin, with the clip the run's
    certification recorded (config's otherwise)."""
    summaries = sorted(Path(workdir).glob("**/certify_sigma*_summary.json"))
    clip_level = config.certify.logit_bound
    for path in summaries:
        clip_level = json.loads(path.read_text()).get("settings", {}).get("logit_bound", clip_level)
    logits_fn, params = functional(model)
    r = margin.margin_certify(logits_fn, params, x, jax.random.key(11),
                              num_classes=config.model.num_classes, lipschitz=bound,
                              logit_bound=clip_level, n0=config.certify.n0,
                              num_samples=margin_samples, alpha=config.certify.alpha,
                              batch_size=1000, bound=config.certify.get("margin_bound",
                                                                        "bernstein"))
    top = np.sort(r.logit_mean, axis=1)
    slack = (top[:, -1] - top[:, -2]) - r.margin_lower
    return {"clip": float(clip_level), "margin_samples": margin_samples,
            "median_mc_slack": float(np.median(slack)),
            "median_radius_lost": float(np.median(slack) / (math.sqrt(2) * bound))}


def _plot_curves(workdir: str) -> None:
    from matplotlib.figure import Figure  # its own canvas: no global backend
    rows = [json.loads(line) for line in Path(workdir, "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    rows = [r for r in rows if not r.get("final") and "clean_accuracy" in r]
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(10, 3))
    for ax, key in zip(fig.subplots(1, 3), ("clean_accuracy", "loss", "lipschitz_bound")):
        ax.plot(steps, [r[key] for r in rows])
        ax.set_xlabel("step")
        ax.set_title(key)
    fig.tight_layout()
    fig.savefig(Path(workdir, "margin_curves.png"), dpi=100)


def account(workdir: str, *, images: int = 16, keys: int = 3, steps: int = 200,
            margin_samples: int = 2000) -> dict:
    model, config, step = training.restore_model(workdir)
    model = frozen.freeze(model)
    batch = next(iter(data.eval_batches(config.dataset.name, "test", batch_size=images, skip=0,
                                        max_examples=images, process_index=0, process_count=1,
                                        **data_kwargs(config))))
    x = jnp.asarray(batch["image"][np.asarray(batch["mask"], bool)], jnp.float32)
    key_list = [jax.random.key(100 + i) for i in range(keys if model.stochastic else 1)]
    whole_fn = lambda p, v, k: model(v, k)  # noqa: E731 (params unused: the model is closed over)
    bound = lipschitz.network_bound(model)
    gain = largest_gain(whole_fn, None, x, key_list, steps=steps)
    rows = [{"layer": "whole network", "bound": bound, "gain": gain}]
    if hasattr(model, "units"):
        for i, unit in enumerate(model.units):
            def unit_fn(p, h, k, i=i, unit=unit):
                return model.activation(unit(h, jax.random.split(
                    jax.random.split(k)[0], len(model.units))[i]))
            h, _ = _features(model, x, key_list[0], i)
            rows.append({"layer": f"unit {i}", "bound": unit.lipschitz_bound(),
                         "gain": largest_gain(unit_fn, None, h, key_list, steps=steps)})
    logits = np.asarray(model(x, key_list[0]), np.float64)
    top = logits.argmax(axis=1)
    gaps = logits[np.arange(len(top)), top][:, None] - logits
    gaps[np.arange(len(top)), top] = np.inf
    runner = gaps.argmin(axis=1)
    pairs = model.pair_bounds() if hasattr(model, "pair_bounds") else None
    constants = (pairs[top, runner] if pairs is not None
                 else np.full(len(top), math.sqrt(2) * bound))
    out = {"workdir": str(workdir), "step": step, "images": images, "rows": rows,
           "median_margin": float(np.median(gaps.min(axis=1))),
           "median_pair_constant": float(np.median(constants)),
           "sqrt2_L": math.sqrt(2) * bound}
    if model.stochastic:
        out.update(_monte_carlo_slack(model, config, workdir, x, bound, margin_samples))
    _plot_curves(workdir)
    Path(workdir, "margin_account.json").write_text(json.dumps(out, indent=2))
    return out


def markdown(out: dict) -> str:
    lines = ["| layer | guaranteed bound | largest gain found | gain / bound |", "|---|---:|---:|---:|"]
    lines += [f"| {r['layer']} | {r['bound']:.4g} | {r['gain']:.4g} | {r['gain'] / r['bound']:.3f} |"
              for r in out["rows"]]
    lines.append(f"\nmedian logit margin {out['median_margin']:.3f}; median per-pair constant "
                 f"{out['median_pair_constant']:.3f} (sqrt(2) L = {out['sqrt2_L']:.3f})")
    if "median_mc_slack" in out:
        lines.append(f"Monte Carlo slack (n = {out['margin_samples']}, clip {out['clip']}): median "
                     f"{out['median_mc_slack']:.3f} logits, {out['median_radius_lost']:.3f} of radius")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--margin_samples", type=int, default=2000)
    args = parser.parse_args()
    print(markdown(account(args.workdir, images=args.images, keys=args.keys, steps=args.steps,
                           margin_samples=args.margin_samples)))
