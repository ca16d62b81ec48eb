import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tests compile hundreds of small programs and run each briefly, so most of their time
# is XLA compiling; LLVM's optimization of the generated CPU code is the larger part of that.
# Level 0 skips it: the same programs (XLA's own graph optimizations and fusion still run),
# slower code, and on 2 cores the default run took 300 s with full optimization against
# about 200 s without (the tools the tests start inherit the setting).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# One persistent compilation cache for the session (removed at its end), as a user's
# reruns share ~/.cache/hycas_jax/xla: the command-line tools the tests start
# (train.py, certify.py, attack.py) read it through the environment, and this process
# through its config, so a program compiled once (the same model and shapes in another
# test, the second start of a tool) is read from disk. Every program is still compiled
# in the session; the default run took 627 s with it, 682 s with the tools' share only,
# and 762 s without (2 CPU cores).
# pytest-xdist's workers inherit the directory the main process made (and removes).
_OWNER = "HYCAS_TESTS_XLA_CACHE" not in os.environ
if _OWNER:
    os.environ["HYCAS_TESTS_XLA_CACHE"] = tempfile.mkdtemp(prefix="hycas_jax_tests_xla_")
COMPILATION_CACHE = os.environ["HYCAS_TESTS_XLA_CACHE"]
os.environ["JAX_COMPILATION_CACHE_DIR"] = COMPILATION_CACHE
jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    if _OWNER:
        shutil.rmtree(COMPILATION_CACHE, ignore_errors=True)


def dense_matrix(fn, in_shape):
    """The matrix of the linear map `fn` on inputs of `in_shape`, built column by column."""
    size = int(np.prod(in_shape))
    flat = lambda v: fn(v.reshape(in_shape)).reshape(-1)
    return np.asarray(jax.jacfwd(flat)(np.zeros(size, np.float32)), np.float64)


def top_singular_value(matrix) -> float:
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """tests/tiny_config.py trained to its end (40 steps, checkpoints at 35 and 40), shared
    read-only by the end-to-end modules; a test that changes a run works on a copy. Under
    pytest-xdist the workers share one run: the first to need it trains it, under a lock."""
    import fcntl

    import tiny_config

    from hycas_jax import training
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the directory all workers' base temps are in
    path = root / "tiny_run" / "run"
    path.parent.mkdir(exist_ok=True)
    with open(root / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "final_metrics.json").exists():
            training.train(tiny_config.get_config(), str(path), progress=False)
    return path
