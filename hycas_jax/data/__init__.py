"""Data for HyCAS: random-access sources and grain pipelines.

`get_source(name, split)` reads the embedded sets (`mnist5k`, `digits8x8`),
prepared TFDS sets and MedMNIST `.npz` files; `train_iterator` and
`eval_batches` turn a source into per-process batches of float32 images in
[0, 1]. See each module's docstring for the data set choices.
"""
from hycas_jax.data.info import DatasetInfo
from hycas_jax.data.pipeline import eval_batches, train_iterator
from hycas_jax.data.sources import HOLDOUT, KNOWN, get_source, holdout_indices

__all__ = ["DatasetInfo", "HOLDOUT", "KNOWN", "eval_batches", "get_source", "holdout_indices",
           "train_iterator"]
