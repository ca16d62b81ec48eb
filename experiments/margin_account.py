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
  the certificate divides it by.

Writes WORKDIR/margin_account.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hycas_jax import data, training
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


def account(workdir: str, *, images: int = 16, keys: int = 3, steps: int = 200) -> dict:
    model, config, step = training.restore_model(workdir)
    model = frozen.freeze(model)
    source, _ = data.get_source(config.dataset.name, "test", **data_kwargs(config))
    x = jnp.asarray(np.stack([source[i]["image"] for i in range(images)]), jnp.float32)
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
    Path(workdir, "margin_account.json").write_text(json.dumps(out, indent=2))
    return out


def markdown(out: dict) -> str:
    lines = ["| layer | guaranteed bound | largest gain found | gain / bound |", "|---|---:|---:|---:|"]
    lines += [f"| {r['layer']} | {r['bound']:.4g} | {r['gain']:.4g} | {r['gain'] / r['bound']:.3f} |"
              for r in out["rows"]]
    lines.append(f"\nmedian logit margin {out['median_margin']:.3f}; median per-pair constant "
                 f"{out['median_pair_constant']:.3f} (sqrt(2) L = {out['sqrt2_L']:.3f})")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    print(markdown(account(args.workdir, images=args.images, keys=args.keys, steps=args.steps)))
