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


# Fields that may change between runs of one experiment: where it runs (the device mesh)
# and how long (a larger num_steps extends a finished run; logging and checkpoint cadence).
RUNTIME_SECTIONS = ("mesh",)
EXTENSIBLE_FIELDS = ("training.num_steps", "training.log_every", "training.checkpoint_every",
                     "training.keep_checkpoints")


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old_json: dict, new_json: dict) -> list[str]:
    """The dotted names of the experiment fields two configs (as JSON) disagree on."""
    old, new = _flat(old_json), _flat(new_json)
    skip = lambda k: k.split(".", 1)[0] in RUNTIME_SECTIONS or k in EXTENSIBLE_FIELDS
    return sorted(k for k in set(old) | set(new) if not skip(k) and old.get(k) != new.get(k))


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes config.json. Refuses a config that differs from the one already there in
    what it computes (resuming would silently mix two experiments), naming the fields;
    the device mesh, the step count and the logging cadence may change, and the file
    is then updated to the new values."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        differ = config_differences(json.loads(old), json.loads(text))
        if differ:
            shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
            raise CheckpointError(
                f"{path} holds a different config than this run's ({shown} differ); use a new "
                "--workdir, or delete the workdir to start over")
        if old == text:
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
        """Restores the pytree shaped like `target` and the meta dict.

        A corrupt checkpoint is a CheckpointError that names the newest intact
        earlier step (and `--step` to use it), found by reading them back."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if step not in self.manager.all_steps():
            raise CheckpointError(f"no checkpoint at step {step} in {self.directory}; "
                                  f"available: {sorted(self.manager.all_steps())}")
        try:
            return self._read(target, step)
        except CheckpointError as e:
            intact = self._newest_intact(target, below=step)
            hint = (f"; step {intact[0]} is intact: --step {intact[0]} uses it"
                    if intact else "; no earlier step is intact")
            raise CheckpointError(f"{e}{hint}") from e.__cause__

    def restore_newest_intact(self, target: Any) -> tuple[Optional[int], Any, dict, list]:
        """(step, state, meta, corrupt steps skipped) of the newest checkpoint that reads
        back; step None (and `target`, {}) when there is none at all. Nothing is deleted."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        newest_error = None
        for i, step in enumerate(steps):
            try:
                state, meta = self._read(target, step)
            except CheckpointError as e:
                newest_error = newest_error or e
                continue
            return step, state, meta, steps[:i]
        if newest_error is not None:
            raise CheckpointError(f"{newest_error}; no earlier step is intact") from newest_error
        return None, target, {}, []

    def set_aside(self, step: int) -> str:
        """Moves an unreadable step out of orbax's way (a resumed run saves that step
        again) into `<workdir>/corrupt_checkpoints/`, keeping its files; returns where."""
        source = os.path.join(self.directory, str(step))
        target = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints", str(step))
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            suffix = 0
            while os.path.exists(target + (f".{suffix}" if suffix else "")):
                suffix += 1
            target += f".{suffix}" if suffix else ""
            os.replace(source, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"hycas_jax set_aside {step}")
        self.manager.reload()
        return target

    def _newest_intact(self, target, *, below: int) -> Optional[tuple[int, Any, dict]]:
        for step in sorted((s for s in self.manager.all_steps() if s < below), reverse=True):
            try:
                return (step, *self._read(target, step))
            except CheckpointError:
                continue
        return None

    def _read(self, target: Any, step: int) -> tuple[Any, dict]:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types (and pages of spec) for unreadable data
            first = " ".join(str(e).split())[:160]
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} is corrupt or does not match "
                f"the model of config.json ({type(e).__name__}: {first})") from e
        return out.state, out.meta

    def close(self) -> None:
        self.manager.close()
