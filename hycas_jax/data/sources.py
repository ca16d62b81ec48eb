"""`get_source`: one entry point from a data set name to a random-access source.

Families: the embedded sets (`mnist5k`, `digits8x8`, built offline from
installed packages), prepared TFDS sets (`tfds_sources.TABLE`) and MedMNIST
`.npz` files (`medmnist:/path/x.npz`, or a `medmnist.TABLE` name with `path=`).
"""
from __future__ import annotations

from hycas_jax.data import embedded, medmnist, tfds_sources
from hycas_jax.data.info import DatasetInfo, check_expected

KNOWN = {
    "embedded": sorted(embedded.BUILDERS),
    "tfds": sorted(tfds_sources.TABLE),
    "medmnist": sorted(medmnist.TABLE),
}


def _family(name: str) -> str:
    if name in embedded.BUILDERS:
        return "embedded"
    if name in tfds_sources.TABLE:
        return "tfds"
    if name.startswith("medmnist:") or name.split("_")[0] in medmnist.TABLE:
        return "medmnist"
    raise ValueError(
        f"Unknown dataset {name!r}. Known: {KNOWN} (MedMNIST also as 'medmnist:/path/x.npz')."
    )


def get_source(name: str, split: str, *, data_dir=None, image_shape=None, num_classes=None,
               **kwargs):
    """Returns (source, DatasetInfo) for one split of a data set.

    `source` has len() and [i] -> {'image': uint8 (H, W, C), 'label': int}, raw
    pixels. `split` is 'train' or 'test' (mapped to the set's own names, see
    `DatasetInfo.split_name`) or any split the family knows. `image_shape` and
    `num_classes`, when given (from a config), must match the data, else
    ValueError. Other keywords go to the family: embedded none; TFDS `config`,
    `attribute` (celeb_a), `image_size`; MedMNIST `path`.
    """
    family = _family(name)
    if family == "embedded":
        src, info = embedded.source(name, split, data_dir, **kwargs)
    elif family == "tfds":
        src, info = tfds_sources.source(name, split, data_dir, **kwargs)
    else:
        src, info = medmnist.source(name, split, data_dir, **kwargs)
    check_expected(info, image_shape, num_classes)
    return src, info


__all__ = ["DatasetInfo", "KNOWN", "get_source"]
