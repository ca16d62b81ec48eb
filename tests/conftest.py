import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


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
