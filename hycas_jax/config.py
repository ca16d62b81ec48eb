"""Experiment configs: one function builds every experiment's ConfigDict.

The files in `configs/` call `experiment(...)` with their choices and are
loaded by `train.py` / `certify.py` through absl's config_flags, so every
field can be overridden on the command line (`--config.training.sigma=0.5`).

Sections: `dataset` (name, data_dir, kwargs), `model` (see
`hycas_jax.models`), `training`, `certify`, `attack`, `mesh` (device mesh
axis sizes, see `hycas_jax.runtime.distributed.make_mesh`).
"""
from __future__ import annotations

import ml_collections

from hycas_jax import models

DATASET_MODELS = {  # dataset -> (backbone, image_shape, num_classes, mean, std)
    "mnist5k": ("small_cnn", (28, 28, 1), 10, (0.1307,), (0.3081,)),
    "mnist": ("small_cnn", (28, 28, 1), 10, (0.1307,), (0.3081,)),
    "digits8x8": ("small_cnn", (8, 8, 1), 10, (0.3,), (0.35,)),
    "cifar10": ("resnet18", (32, 32, 3), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("resnet18", (32, 32, 3), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def experiment(dataset: str = "mnist5k", *, kind: str = "hycas", rani: str = "per_block",
               sigma: float = 0.25, backbone: str | None = None, image_shape=None,
               num_classes: int | None = None, mean=None, std=None) -> ml_collections.ConfigDict:
    """The config of one experiment; dataset-specific defaults come from DATASET_MODELS."""
    known = DATASET_MODELS.get(dataset)
    if known is None and None in (backbone, image_shape, num_classes):
        raise ValueError(f"dataset {dataset!r} has no defaults here; pass backbone, image_shape "
                         f"and num_classes (datasets with defaults: {sorted(DATASET_MODELS)})")
    d_backbone, d_shape, d_classes, d_mean, d_std = known or (None,) * 5
    channels = (image_shape or d_shape)[2]
    c = ml_collections.ConfigDict()
    # holdout: training examples held out as the 'holdout' split (validation; 0: none).
    c.dataset = ml_collections.ConfigDict({"name": dataset, "data_dir": "", "kwargs": {},
                                           "holdout": 0})

    c.model = models.default_config(backbone or d_backbone)
    c.model.kind, c.model.rani = kind, ("off" if kind != "hycas" else rani)
    c.model.image_shape = tuple(image_shape or d_shape)
    c.model.num_classes = num_classes or d_classes
    c.model.mean = tuple(mean or d_mean or (0.5,) * channels)
    c.model.std = tuple(std or d_std or (0.25,) * channels)

    t = c.training = ml_collections.ConfigDict()
    t.seed = 0
    t.batch_size = 128
    t.num_steps = 1000
    t.optimizer = "adam"
    t.learning_rate = 1e-3
    t.schedule = "cosine"
    t.warmup_steps = 50
    t.weight_decay = 0.0
    t.grad_clip = 0.0
    t.sigma = sigma  # Gaussian input-noise augmentation, raw pixel space
    t.augment = "none"  # or "crop_flip" (hycas_jax.data.augment), drawn in the step
    # Lipschitz models have small logits; CE sees temperature * logits (the model is unchanged).
    t.logit_temperature = 1.0 if kind == "plain" else 10.0
    # "ce", or a margin-aware loss for Lipschitz models ("lipschitz_margin", "hinge":
    # hycas_jax.training.losses) asking for the margin a certificate of radius margin_eps needs.
    t.loss = "ce"
    t.margin_eps = 0.0
    t.log_every = 50
    t.checkpoint_every = 200
    t.keep_checkpoints = 2
    t.adversarial = ml_collections.ConfigDict(
        {"enabled": False, "norm": "linf", "eps": 0.1, "step_size": 0.025, "steps": 7})

    r = c.certify = ml_collections.ConfigDict()
    r.sigma = sigma
    r.n0 = 100
    r.n = 100_000
    r.alpha = 0.001
    r.batch_size = 1000  # Monte Carlo samples per jitted chunk
    r.skip = 1
    r.max_examples = 500
    r.margin = True  # also the Lipschitz margin certificate (no input noise)
    r.margin_samples = 100_000  # one vmapped batch, as randomized smoothing's n
    r.logit_bound = 10.0
    r.margin_bound = "bernstein"  # or "hoeffding", "both" (certification/margin.py)
    r.margin_clip = "fixed"  # logit_bound as set; "calibrated": from training images
    r.seed = 0

    # How every PRNG key of the run is made (train.py, certify.py, attack.py): see
    # hycas_jax.rng.IMPLS; "rbg" is faster on GPUs and TPUs, threefry2x32 the same everywhere.
    c.prng_impl = "threefry2x32"

    # Data parallelism over every device of every process by default; 'model'
    # is reserved for sharding parameters (size 1: replicated).
    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})

    a = c.attack = ml_collections.ConfigDict()
    a.norm = "linf"
    a.eps = (0.0, 0.05, 0.1, 0.2, 0.3)
    a.n_iter = 100
    a.eot_iter = 20
    a.max_examples = 200
    a.vote_samples = 100
    a.seed = 0
    return c


def mnist5k(kind: str = "hycas", *, rani: str = "per_block", sigma: float = 0.25,
            **kwargs) -> ml_collections.ConfigDict:
    """An MNIST-5k experiment sized for 2 CPU cores (minutes per run): the
    budget every `configs/mnist*.py` method shares, so they compare fairly.
    The certification budget (n = 2,000 on 50 images) caps radii at sigma * 2.70."""
    c = experiment("mnist5k", kind=kind, rani=rani, sigma=sigma, **kwargs)
    c.training.num_steps = 800
    c.training.batch_size = 64
    c.training.learning_rate = 3e-3
    c.certify.n = c.certify.margin_samples = 2_000
    c.certify.max_examples = 50
    c.certify.skip = 20
    return c


def tight_lipschitz(c: ml_collections.ConfigDict, *, margin_eps: float = 1.0,
                    temperature: float = 6.0) -> ml_collections.ConfigDict:
    """An MNIST-sized config turned into a tight Lipschitz network trained for margins
    (the training steps fill about 10 minutes on 2 CPU cores):
    AOL convolutions with space-to-depth downsampling (nn/aol.py), the feature map
    flattened into the head, one stream per unit (the conv alone; HyCAS keeps its
    streams), the Lipschitz-margin loss for radius `margin_eps` at `temperature`, and no
    input noise in training (a margin certificate needs margins, not noise)."""
    m = c.model
    m.conv, m.pool = "aol", "flatten"
    m.strides = (2, 1, 2, 1)
    if m.kind == "lipschitz":
        m.widths, m.streams = (32, 32, 128, 128), (("sncan",),) * 4
    else:  # three streams per unit: half the widths keep a step as fast (2 CPU cores)
        m.widths, m.streams = (16, 16, 64, 64), (m.streams[0],) * 4
    t = c.training
    t.loss, t.margin_eps, t.logit_temperature = "lipschitz_margin", margin_eps, temperature
    t.learning_rate, t.batch_size, t.num_steps = 2e-3, 128, 2000
    if m.kind == "lipschitz":
        t.sigma = 0.0
    return c


def cifar(dataset: str, sigma: float, schedule: str = "paper") -> ml_collections.ConfigDict:
    """HyCAS ResNet-18 on CIFAR-10/100 with the paper's layout (all three streams at every
    convolution; `schedule="notebook"`: the authors' notebook's streams per stage), the
    randomized-smoothing recipe's random crop and flip, and the paper's budget (100 epochs)."""
    if schedule not in models.STREAM_SCHEDULES:
        raise ValueError(f"unknown stream schedule {schedule!r}; known: "
                         f"{sorted(models.STREAM_SCHEDULES)}")
    c = experiment(dataset, kind="hycas", rani="per_block", sigma=sigma)
    c.model.streams = models.STREAM_SCHEDULES[schedule]
    c.training.augment = "crop_flip"
    c.training.batch_size = 256
    c.training.num_steps = 100 * 50_000 // 256
    c.training.learning_rate = 1e-3
    c.training.warmup_steps = 500
    c.training.checkpoint_every = 2000
    c.training.log_every = 200
    return c


def cifar_from_arg(dataset: str, arg: str) -> ml_collections.ConfigDict:
    """`cifar` from a config file's argument `SIGMA` or `SIGMA,SCHEDULE`
    (`--config configs/cifar10.py:0.5,notebook`)."""
    sigma, _, schedule = arg.partition(",")
    return cifar(dataset, float(sigma), schedule or "paper")


def data_kwargs(config, *, data_dir=None) -> dict:
    """The keywords of `hycas_jax.data.get_source` (and the pipelines) for an experiment's
    data set: where it lives (`data_dir` overrides the config's), its family's options,
    and the image shape and class count the model was built for, which every read
    checks against the data."""
    kwargs = dict(config.dataset.get("kwargs", {}) or {})
    kwargs["data_dir"] = data_dir or config.dataset.get("data_dir") or None
    kwargs["image_shape"] = tuple(config.model.image_shape)
    kwargs["num_classes"] = config.model.num_classes
    if config.dataset.get("holdout", 0):
        kwargs["holdout"] = int(config.dataset.holdout)
    return kwargs
