"""Randomized-smoothing baseline: the plain (unconstrained) CNN with Gaussian noise training."""
from hycas_jax.config import experiment


def get_config():
    c = experiment("mnist5k", kind="plain", sigma=0.25)
    c.training.num_steps = 800
    c.training.batch_size = 64
    c.training.learning_rate = 3e-3
    c.certify.n = 10_000
    c.certify.max_examples = 100
    c.certify.skip = 10
    return c
