"""The README's table of the choices the paper leaves open says what the code does."""
from pathlib import Path

from hycas_jax import config, models
from hycas_jax.models import rani, rpfan

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
TABLE = README[README.index("## Choices the paper leaves open"):README.index("## Benchmarks")]


def test_the_choices_table_names_the_code_values():
    model = models.default_config("resnet18")
    assert f"`scale = {rani.SCALE_FLOOR} + softplus(u)`" in TABLE
    assert f"`shift = {rani.SHIFT_LIMIT} tanh(v)`" in TABLE
    assert f"above {rani.MIN_MASK_SD} per channel" in TABLE
    assert f'`model.rani_spread = "{model.rani_spread}"`' in TABLE
    assert f'`model.rpfan = "{model.rpfan}"`' in TABLE and set(rpfan.FORMS) == {"mixed", "depthwise"}
    assert f"`model.rpfan_random_weight = {model.rpfan_random_weight}`" in TABLE
    assert f"a = {rpfan.DEFAULT_RANDOM_WEIGHT}" in TABLE
    assert f"`model.dct_keep = {model.dct_keep}`" in TABLE
    assert model.streams == (models.ALL_STREAMS,) * 4
    hycas, plain = config.experiment("cifar10"), config.experiment("cifar10", kind="plain")
    assert (hycas.training.logit_temperature, plain.training.logit_temperature) == (10.0, 1.0)
    assert "cross-entropy on 10 x logits" in TABLE
    c = config.cifar("cifar10", 0.5)
    assert c.training.augment == "crop_flip" and '`training.augment = "crop_flip"`' in TABLE
    assert c.training.num_steps == 100 * 50_000 // c.training.batch_size
    assert (f"batch {c.training.batch_size}, Adam at {c.training.learning_rate:g}" in TABLE
            and c.training.optimizer == "adam" and c.training.schedule == "cosine")
    assert f"after {c.training.warmup_steps} warmup steps" in TABLE
    assert model.activation == "maxmin" and "MaxMin" in TABLE
