"""Checkpoints of a training run, and loading a trained model back.

A workdir holds `config.json` (the experiment config, written once) and an
orbax `CheckpointManager` directory `checkpoints/` with, per saved step:

* ``state``: the pytree {params, rest, opt_state} (StandardSave);
* ``meta``: JSON {step, key (root PRNG key data)};
* ``data``: each process's input-iterator position, `process_<i>-of-<n>.json`
  (grain's checkpoint handler).

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoint intact. Anything that
cannot be read back raises `CheckpointError` naming the path and the step.
"""
from __future__ import annotations

import json
import math
from typing import Any, Optional

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from hycas_jax.runtime import files

CONFIG_FILE = "config.json"
DATA_ITEM = "data"  # the grain iterator's position, a file per process


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
    files.path(workdir).mkdir(parents=True, exist_ok=True)
    path = files.path(workdir) / CONFIG_FILE
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if path.exists():
        old = path.read_text()
        differ = config_differences(json.loads(old), json.loads(text))
        if differ:
            shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
            raise CheckpointError(
                f"{path} holds a different config than this run's ({shown} differ); use a new "
                "--workdir, or delete the workdir to start over")
        if old == text:
            return
    files.replace_bytes(path, text.encode())


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = files.path(workdir) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"no training run in {str(workdir)!r}: {path} is missing")
    try:
        return ml_collections.ConfigDict(json.loads(path.read_text()))
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
        self.directory = str(files.path(workdir).resolve() / "checkpoints"
                             if files.is_local(workdir) else files.path(workdir) / "checkpoints")
        if not create and not files.path(self.directory).is_dir():
            raise CheckpointError(f"no checkpoint directory {self.directory}")
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create))

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, iterator=None) -> None:
        """Saves `state`, the JSON `meta` and, if given, the grain `iterator`'s position
        (one file per process: each process reads its own shard of the data)."""
        items = dict(state=ocp.args.StandardSave(state),
                     meta=ocp.args.JsonSave(dict(meta, step=step)))
        if iterator is not None:
            items[DATA_ITEM] = grain.checkpoint.CheckpointSave(iterator)
        self.manager.save(step, args=ocp.args.Composite(**items))

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

    def restore_newest_intact(self, target: Any, iterator=None
                              ) -> tuple[Optional[int], Any, dict, list]:
        """(step, state, meta, corrupt steps skipped) of the newest checkpoint that reads
        back, with `iterator` (if given) set to that step's position of this process;
        step None (and `target`, {}) when there is none at all. Nothing is deleted."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        found = self._newest_intact(target, below=math.inf, iterator=iterator)
        if found is not None:
            step, state, meta = found
            return step, state, meta, [s for s in steps if s > step]
        if steps:  # none reads back: the newest step's own error
            try:
                self._read(target, steps[0], iterator)
            except CheckpointError as e:
                raise CheckpointError(f"{e}; no earlier step is intact") from e.__cause__
        return None, target, {}, []

    def set_aside(self, step: int) -> str:
        """Moves an unreadable step out of orbax's way (a resumed run saves that step
        again) into `<workdir>/corrupt_checkpoints/`, keeping its files; returns where."""
        source = files.path(self.directory) / str(step)
        aside = files.path(self.directory).parent / "corrupt_checkpoints"
        target = aside / str(step)
        if jax.process_index() == 0:
            aside.mkdir(parents=True, exist_ok=True)
            suffix = 0
            while target.exists():
                suffix += 1
                target = aside / f"{step}.{suffix}"
            source.rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"hycas_jax set_aside {step}")
        self.manager.reload()
        return str(target)

    def _newest_intact(self, target, *, below, iterator=None
                       ) -> Optional[tuple[int, Any, dict]]:
        """(step, state, meta) of the newest step below `below` that reads back, or None."""
        for step in sorted((s for s in self.manager.all_steps() if s < below), reverse=True):
            try:
                return (step, *self._read(target, step, iterator))
            except CheckpointError:
                continue
        return None

    def _read(self, target: Any, step: int, iterator=None) -> tuple[Any, dict]:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        items = dict(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        # Checkpoints before per-process iterator files kept process 0's position in meta.
        per_process = (files.path(self.directory) / str(step) / DATA_ITEM).is_dir()
        if iterator is not None and per_process:
            items[DATA_ITEM] = grain.checkpoint.CheckpointRestore(iterator)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # orbax raises many types (and pages of spec) for unreadable data
            first = " ".join(str(e).split())[:160]
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} is corrupt or does not match "
                f"the model of config.json ({type(e).__name__}: {first})") from e
        if iterator is not None and not per_process:
            iterator.set_state(out.meta["data"])
        return out.state, out.meta

    def close(self) -> None:
        self.manager.close()
