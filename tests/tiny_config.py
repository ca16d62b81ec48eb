"""A tiny experiment (8x8 digits, a few units) for tests that run train.py."""
from hycas_jax.config import experiment


def get_config(kind: str = "hycas"):
    c = experiment("digits8x8", kind=kind, sigma=0.25)
    c.model.widths, c.model.strides = (4, 8, 8), (2, 2, 1)
    c.training.batch_size = 32
    c.training.num_steps = 40
    c.training.learning_rate = 3e-3
    c.training.warmup_steps = 2
    c.training.log_every = 5
    c.training.checkpoint_every = 5
    c.certify.n0, c.certify.n, c.certify.batch_size = 20, 200, 100
    c.certify.max_examples, c.certify.skip = 6, 1
    c.certify.margin_samples = 100
    c.attack.n_iter, c.attack.eot_iter, c.attack.max_examples = 5, 2, 16
    c.attack.vote_samples = 10
    return c
