"""HyCAS with the budgeted RANI placement (whole network truly <= 2-Lipschitz before
normalization; std = 1 so the normalization adds no factor)."""
from hycas_jax.config import experiment


def get_config():
    c = experiment("mnist5k", kind="hycas", rani="budgeted", sigma=0.25, std=(1.0,))
    c.training.num_steps = 800
    c.training.batch_size = 64
    c.training.learning_rate = 3e-3
    c.certify.n = 10_000
    c.certify.max_examples = 100
    c.certify.skip = 10
    return c
