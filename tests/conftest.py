import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The command-line tools the tests start (train.py, certify.py, attack.py) share one
# persistent compilation cache for the session, as a user's reruns share
# ~/.cache/hycas_jax/xla: the second start of a tool reads its programs from disk.
# Set after `import jax`, so this test process itself compiles everything.
COMPILATION_CACHE = tempfile.mkdtemp(prefix="hycas_jax_tests_xla_")
os.environ["JAX_COMPILATION_CACHE_DIR"] = COMPILATION_CACHE


def pytest_unconfigure(config):
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
