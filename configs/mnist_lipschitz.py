"""Deterministic Lipschitz baseline: the same backbone without RANI or random projections."""
from hycas_jax.config import mnist5k


def get_config():
    return mnist5k("lipschitz")
