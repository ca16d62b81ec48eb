"""HyCAS small CNN on a MedMNIST `.npz` file. Pass the path after a colon:
`--config configs/medmnist.py:/data/dermamnist.npz` (the name is the file's
stem; MedMNIST+ size suffixes such as `_64` are understood). Channels, size and
class count are read from the MedMNIST table in `hycas_jax.data`.
"""
import os

from hycas_jax import data
from hycas_jax.config import experiment


def get_config(path: str = "dermamnist.npz"):
    name = "medmnist:" + path
    _, info = data.get_source(name, "test") if os.path.exists(path) else (None, None)
    shape = tuple(info.image_shape) if info else (28, 28, 3)
    classes = info.num_classes if info else 7
    c = experiment(name, kind="hycas", sigma=0.25, backbone="small_cnn", image_shape=shape,
                   num_classes=classes)
    c.training.num_steps = 3000
    return c
