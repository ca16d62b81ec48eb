"""What `train.py`, `certify.py` and `attack.py` share: flags parsed into their own
`FlagValues` (so each tool also runs in-process, as the tests run it), the
`--config.section.field=value` override syntax over one ConfigDict, and one error
path: a user's mistake is one line `<tool>: error: <what is wrong>` on stderr and
exit status 1, never a traceback.

train.py's config comes from `--config FILE[:ARG]`; certify.py's and attack.py's
from the workdir's saved `config.json`, of which each may override only its own
section (and where the data lives).
"""
from __future__ import annotations

import os
import re
import sys
from typing import Callable, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from hycas_jax.runtime import checkpointing, compilation_cache, distributed, runlock

USER_ERRORS = (checkpointing.CheckpointError, runlock.BusyError, ValueError, FileNotFoundError)
_QUOTES = "'\""


class UsageError(Exception):
    """A command-line mistake; its message is printed as the tool's one error line."""


def one_line(text: str, limit: int = 600) -> str:
    """`text` on one line: an embedded traceback is cut to its last line (the error
    itself), whitespace collapsed, and the whole kept under `limit` characters."""
    text = str(text)
    if "Traceback (most recent call last)" in text:
        head, tail = text.split("Traceback (most recent call last)", 1)
        text = head.rstrip(": \n") + ": " + tail.strip().splitlines()[-1]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def run(prog: str, define: Callable, body: Callable, argv: Sequence[str]) -> int:
    """Defines the tool's flags (`define(flag_values, argv)`), parses `argv`
    (argv[0] is the program), runs `body(flag_values)`. Returns the exit status."""
    fv = flags.FlagValues()
    try:
        try:
            define(fv, list(argv))
            fv(list(argv))
        except flags.Error as e:
            raise UsageError(str(e)) from None
        except AttributeError as e:  # ml_collections: an override of a field the config lacks
            raise _no_field(e) from None
        body(fv)
    except (UsageError, *USER_ERRORS) as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


def main(prog: str, define: Callable, body: Callable) -> None:
    """`run` on sys.argv, exiting with its status (the tools' `__main__`)."""
    sys.exit(run(prog, define, body, sys.argv))


# ------------------------------------------------------------------ shared flags

def define_runtime_flags(fv: flags.FlagValues, *, multi_host: bool = False) -> None:
    """Flags every tool takes (progress bar, compilation cache) and, for a tool that
    runs over several hosts, how jax.distributed starts."""
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    flags.DEFINE_string("compilation_cache", compilation_cache.default_dir(),
                        compilation_cache.FLAG_HELP, flag_values=fv)
    if not multi_host:
        return
    flags.DEFINE_bool("distributed", False,
                      "Start jax.distributed with the cluster settings JAX detects itself.",
                      flag_values=fv)
    flags.DEFINE_string("coordinator_address", None,
                        "host:port of process 0, for jax.distributed.", flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "Number of processes, for jax.distributed.",
                         flag_values=fv)
    flags.DEFINE_integer("process_id", None, "This process's index, for jax.distributed.",
                         flag_values=fv)


def start_runtime(fv: flags.FlagValues) -> None:
    """jax.distributed (when the tool takes it and is asked) and the compilation cache."""
    if "distributed" in fv:
        distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id,
                               auto=fv.distributed)
    compilation_cache.enable(fv.compilation_cache)


# ------------------------------------------------------------------ configs

def config_file_path(spec: str) -> str:
    """The file of a `--config FILE[:ARG]` value (`configs/cifar10.py:0.25`)."""
    return spec.split(":", 1)[0]


def define_config_file(fv: flags.FlagValues, argv: Sequence[str], default: str) -> None:
    """train.py's `--config FILE[:ARG]` with `--config.*` overrides."""
    spec = _argv_value(argv, "config") or default
    if not os.path.isfile(config_file_path(spec)):
        raise UsageError(f"--config: no config file {config_file_path(spec)!r}")
    try:
        config_flags.DEFINE_config_file("config", default, "Experiment config file[:argument].",
                                        flag_values=fv, lock_config=True, sys_argv=list(argv))
    except (TypeError, ValueError, ImportError, SyntaxError) as e:  # get_config failed
        raise UsageError(f"--config {spec}: {one_line(e)}") from None


def loaded_config(fv: flags.FlagValues) -> ml_collections.ConfigDict:
    """`--config` with its overrides applied (ml_collections loads lazily, so a file
    that fails to build fails here), or a UsageError naming the problem."""
    try:
        config = fv.config
        config.keys()
    except AttributeError as e:
        raise _no_field(e) from None
    except Exception as e:  # the config file itself fails to import or to build
        raise UsageError(f"--config: {type(e).__name__}: {one_line(e)}") from None
    return config


def define_workdir_config(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    """certify.py's / attack.py's `--config.*` overrides, over the saved config of the
    `--workdir` named in argv (a workdir without one is a CheckpointError)."""
    workdir = _argv_value(argv, "workdir")
    saved = checkpointing.restore_config(workdir) if workdir else ml_collections.ConfigDict()
    config_flags.DEFINE_config_dict("config", saved, "Overrides of the workdir's saved config.",
                                    flag_values=fv, lock_config=True, sys_argv=list(argv))


def config_overrides(fv: flags.FlagValues, allowed: Sequence[str], prog: str) -> dict:
    """{'section.field': value} of the `--config.*` overrides on the command line; one
    outside `allowed` (path prefixes) is a UsageError."""
    given = dict(fv["config"].override_values)
    for path in given:
        if not any(path == a or path.startswith(a + ".") for a in allowed):
            raise UsageError(f"--config.{path}: {prog} can override only "
                             f"{', '.join('config.' + a for a in allowed)} (the model and "
                             "training settings are the checkpoint's)")
    return given


def merge_flag(name: str, flag_value, config_value, *, overridden: bool):
    """A tool flag and the same setting's `--config.*` override: either may be given,
    both only if they agree."""
    if flag_value is None:
        return config_value if overridden else None
    if overridden and config_value != flag_value:
        raise UsageError(f"--{name}={flag_value!r} and its --config override "
                         f"{config_value!r} disagree; give one")
    return flag_value


def _no_field(error: AttributeError) -> UsageError:
    """ml_collections' AttributeError for an override of a field the config lacks."""
    return UsageError(f"--config override: the config has no field "
                      f"{str(error).strip(_QUOTES)!r}")


def _argv_value(argv: Sequence[str], name: str):
    """The value of `--name=V` / `--name V` in argv (the last one), or None."""
    value = None
    for i, arg in enumerate(argv):
        if re.match(rf"^--?{name}=", arg):
            value = arg.split("=", 1)[1]
        elif re.match(rf"^--?{name}$", arg) and i + 1 < len(argv):
            value = argv[i + 1]
    return value
