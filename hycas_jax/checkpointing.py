"""Checkpoints of a training run, and loading a trained model back.

A workdir holds `config.json` (the experiment config, written once) and an
orbax `CheckpointManager` directory `checkpoints/` with, per saved step:

* ``state``: the pytree {params, rest, opt_state} (StandardSave);
* ``meta``: JSON {step, data (the input iterator's position), key (root PRNG
  key data)}.

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoint intact. Anything that
cannot be read back raises `CheckpointError` naming the path and the step.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint or workdir is missing, corrupt, or does not match the config."""


# Sections that may change between runs of one experiment: where it runs, not what it computes.
RUNTIME_SECTIONS = ("mesh",)


def _experiment_part(config_json: dict) -> dict:
    return {k: v for k, v in config_json.items() if k not in RUNTIME_SECTIONS}


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes config.json; refuses to overwrite a different config (resuming
    with changed settings would silently mix two experiments). The device
    mesh may differ: results do not depend on it."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if _experiment_part(json.loads(old)) != _experiment_part(json.loads(text)):
            raise CheckpointError(
                f"{path} holds a different config than this run's; use a new --workdir, or "
                "delete the workdir to start over")
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise CheckpointError(f"no training run in {workdir!r}: {path} is missing")
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid config file: {e}") from e


def _tuples(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """JSON turns tuples into lists; the model config wants tuples back."""
    def fix(v):
        if isinstance(v, list):
            return tuple(fix(x) for x in v)
        return v
    out = ml_collections.ConfigDict()
    for k, v in config.items():
        out[k] = _tuples(v) if isinstance(v, ml_collections.ConfigDict) else fix(v)
    return out


def restore_config(workdir: str) -> ml_collections.ConfigDict:
    """load_config with list fields turned back into tuples."""
    return _tuples(load_config(workdir))


class Checkpointer:
    """Thin layer over orbax's CheckpointManager for one workdir."""

    def __init__(self, workdir: str, *, max_to_keep: int = 3, create: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        if not create and not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoint directory {self.directory}")
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create))

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta, step=step))))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def restore(self, target: Any, step: Optional[int] = None) -> tuple[Any, dict]:
        """Restores the pytree shaped like `target` and the meta dict."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if step not in self.manager.all_steps():
            raise CheckpointError(f"no checkpoint at step {step} in {self.directory}; "
                                  f"available: {sorted(self.manager.all_steps())}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for unreadable data
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} is corrupt or does not match "
                f"the model of config.json: {type(e).__name__}: {e}") from e
        return out.state, out.meta

    def close(self) -> None:
        self.manager.close()
