"""HyCAS ResNet-18 on CIFAR-10 as in the paper. Pass sigma after a colon:
`--config configs/cifar10.py:0.5` (default 0.5; the paper uses 0.25, 0.5, 1.0).

Needs the TFDS `cifar10` dataset prepared as array_record (see README) and an
accelerator; the settings follow the paper's budget (100 epochs).
"""
from hycas_jax.config import experiment


def get_config(sigma: str = "0.5"):
    c = experiment("cifar10", kind="hycas", rani="per_block", sigma=float(sigma))
    c.training.batch_size = 256
    c.training.num_steps = 100 * 50_000 // 256
    c.training.learning_rate = 1e-3
    c.training.warmup_steps = 500
    c.training.checkpoint_every = 2000
    c.training.log_every = 200
    return c
