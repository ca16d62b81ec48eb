"""HyCAS ResNet-18 on any TFDS data set in the loader's table. Name it after a colon:

    python train.py --config configs/tfds.py:patch_camelyon --workdir runs/pcam \
        --config.dataset.data_dir=/data/tfds

Known: svhn_cropped, celeb_a (binary attribute, `--config.dataset.kwargs.attribute=Male`),
patch_camelyon, diabetic_retinopathy_detection (btgraham-300, resized to 224),
imagenet2012 (manual download). The data must be prepared as array_record (see README).
Image shape and class count come from the loader's table; mean/std are generic
(0.5, 0.25) unless overridden.
"""
from hycas_jax.config import experiment
from hycas_jax.data.tfds_sources import DEFAULT_ATTRIBUTE, TABLE


def get_config(name: str = "patch_camelyon"):
    if name not in TABLE:
        raise ValueError(f"unknown TFDS data set {name!r}; known: {sorted(TABLE)}")
    entry = TABLE[name]
    channels = entry.image_shape[2]
    c = experiment(name, kind="hycas", sigma=0.25, backbone="resnet18",
                   image_shape=entry.image_shape, num_classes=entry.num_classes,
                   mean=(0.5,) * channels, std=(0.25,) * channels)
    if name == "celeb_a":
        c.dataset.kwargs = {"attribute": DEFAULT_ATTRIBUTE}
    c.training.batch_size = 128
    c.training.num_steps = 30_000
    c.training.checkpoint_every = 2000
    c.training.log_every = 200
    return c
