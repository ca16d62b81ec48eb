"""JAX's persistent compilation cache, as the command-line tools turn it on.

A resumed run (after a preemption, a kill, or a certification stopped at its
last finished image) compiles exactly the programs the first run compiled.
With the cache on, it reads them from disk instead: the tiny test config's
`train.py` runs in 17 s instead of 42 s on 2 CPU cores, and on a TPU pod the
saving is minutes. The cache is JAX's own (`jax_compilation_cache_dir`); it
keys every entry on the program, the JAX version, the backend and the XLA
flags, so a stale entry is never used, and an unreadable entry (a process
killed while writing it) is a warning and a recompile, never a wrong program.

`train.py`, `certify.py` and `attack.py` take `--compilation_cache=DIR`
(default: `$JAX_COMPILATION_CACHE_DIR`, else `~/.cache/hycas_jax/xla`;
`--compilation_cache=` turns it off). `experiments/reproduce.py` keeps one
cache per study profile, under `~/.cache/hycas_jax/jax_cache/`. Library code
leaves the cache as the caller configured it.
"""
from __future__ import annotations

import os
from typing import Optional

import jax

MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
FLAG_HELP = ("JAX persistent compilation cache directory: a rerun or resume skips compiling "
             "('' turns it off; see hycas_jax.runtime.compilation_cache).")


def default_dir() -> str:
    """`$JAX_COMPILATION_CACHE_DIR` if set, else `~/.cache/hycas_jax/xla`."""
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "hycas_jax", "xla")


def enable(path: Optional[str]) -> Optional[str]:
    """Turns JAX's persistent compilation cache on at `path`; None or "" turns it off
    (also when `$JAX_COMPILATION_CACHE_DIR` had turned it on).

    Every program is cached, however quickly it compiled (JAX's default skips
    those under 1 s; a training run's many small ones add up to seconds and
    take about 2 MB), unless `$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`
    says otherwise. Call it before the first compilation. Returns the
    absolute path, or None when off.
    """
    if not path:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"compilation cache directory {path!r} cannot be created: {e}") from None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    if MIN_COMPILE_ENV not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
