"""Randomized-smoothing baseline: the plain (unconstrained) CNN with Gaussian noise training."""
from hycas_jax.config import mnist5k


def get_config():
    c = mnist5k("plain")
    c.certify.margin = False  # an unconstrained CNN's bound is far too large to matter
    return c
