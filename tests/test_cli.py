"""train.py, certify.py and attack.py run in-process: every config form the README
names, one override syntax, one-line errors, extending a finished run."""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from hycas_jax.runtime import checkpointing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from test_data_medmnist import write_npz  # noqa: E402
from test_data_tfds import write_fake  # noqa: E402

import attack  # noqa: E402
import certify  # noqa: E402
import train  # noqa: E402

TINY = str(ROOT / "tests" / "tiny_config.py")
# A one-step run of any config, on widths small enough for 2 CPU cores.
ONE_STEP = ["--config.training.num_steps=1", "--config.training.batch_size=2",
            "--config.training.warmup_steps=0", "--progress=false"]
# One stream per unit: quick to compile, for tests about anything but the model.
ONE_STREAM = ["--config.model.widths=(4,4,4)",
              "--config.model.streams=(('sncan',), ('sncan',), ('sncan',))"]
TINY_RESNET = ["--config.model.widths=(4,4,4,4)", "--config.model.blocks_per_stage=1"]


def _error_line(capsys, prog):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error:"), err
    return last


@pytest.fixture(scope="module")
def workdir(tiny_run):
    """tests/tiny_config.py trained to step 40 (checkpoints at 35 and 40)."""
    return tiny_run


@pytest.mark.parametrize("spec, field, value", [
    ("configs/mnist.py", "model.rani", "per_block"),
    ("configs/mnist_budgeted.py", "model.rani", "final"),
    ("configs/mnist_budgeted.py", "model.conv", "aol"),
    ("configs/mnist_lipschitz.py", "training.loss", "lipschitz_margin"),
    ("configs/mnist_rs.py", "model.kind", "plain"),
    ("configs/mnist_lipschitz.py", "model.kind", "lipschitz"),
    ("configs/mnist_at.py", "training.adversarial.enabled", True),
    ("configs/cifar10.py:0.25", "certify.sigma", 0.25),
    ("configs/cifar100.py:1.0", "model.num_classes", 100),
    ("configs/cifar10.py:0.25,notebook", "model.streams",
     (("sncan", "fdpan", "rpfan"),) * 2 + (("sncan", "rpfan"), ("sncan",))),
    ("configs/medmnist.py:/data/dermamnist.npz", "dataset.name", "medmnist:/data/dermamnist.npz"),
    ("configs/tfds.py:patch_camelyon", "model.image_shape", (96, 96, 3)),
])
def test_every_documented_config_form_loads(spec, field, value):
    from absl import flags
    fv = flags.FlagValues()
    argv = ["train.py", f"--config={ROOT / spec}", "--workdir=unused"]
    train.define(fv, argv)
    fv(argv)
    config = fv.config
    for part in field.split("."):
        config = config[part]
    assert config == value


def _fake_tfds(name, data_dir):
    write_fake(name, str(data_dir), splits={"train": 4, "test": 3})


@pytest.mark.parametrize("spec, prepare, extra", [
    pytest.param("configs/cifar10.py:0.25", lambda d: _fake_tfds("cifar10", d), TINY_RESNET,
                 marks=pytest.mark.slow),
    pytest.param("configs/medmnist.py:{d}/dermamnist.npz",
                 lambda d: write_npz(d / "dermamnist.npz"), ["--config.model.widths=(4,4,4)"],
                 marks=pytest.mark.slow),
    pytest.param("configs/cifar100.py:0.5", lambda d: _fake_tfds("cifar100", d), TINY_RESNET,
                 marks=pytest.mark.slow),
    pytest.param("configs/tfds.py:patch_camelyon", lambda d: _fake_tfds("patch_camelyon", d),
                 TINY_RESNET, marks=pytest.mark.slow),
])
def test_documented_config_forms_train_a_step_through_the_cli(spec, prepare, extra, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    prepare(data_dir)
    argv = ["train.py", f"--config={ROOT / spec.format(d=data_dir)}",
            f"--workdir={tmp_path / 'run'}", f"--config.dataset.data_dir={data_dir}",
            *ONE_STEP, *extra]
    assert train.run(argv) == 0
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert final["step"] == 1


@pytest.mark.parametrize("args, message", [
    (["--config=configs/nonexistent.py"], "--config: no config file 'configs/nonexistent.py'"),
    (["--config.training.no_such_field=1"], "the config has no field 'no_such_field'"),
    ([f"--config={ROOT / 'configs' / 'tfds.py'}:no_such_set"],
     "ValueError: unknown TFDS data set 'no_such_set'"),
    (["--config.training.num_steps=abc"], "flag --config.training.num_steps=abc: invalid literal"),
])
def test_train_errors_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    assert train.run(["train.py", f"--workdir={tmp_path / 'run'}", *args]) == 1
    assert message in _error_line(capsys, "train.py")
    assert not (tmp_path / "run").exists()


def test_extending_a_finished_run_and_naming_the_field_of_a_refused_resume(workdir, tmp_path,
                                                                            capsys):
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    base = ["train.py", f"--config={TINY}", f"--workdir={run}", "--progress=false"]
    assert train.run(base + ["--config.training.num_steps=45"]) == 0
    assert json.loads((run / "final_metrics.json").read_text())["step"] == 45
    assert checkpointing.restore_config(str(run)).training.num_steps == 45
    capsys.readouterr()
    assert train.run(base + ["--config.training.num_steps=45",
                             "--config.training.learning_rate=0.1"]) == 1
    assert "training.learning_rate differ" in _error_line(capsys, "train.py")


def test_certify_takes_config_overrides_like_its_flags(workdir, tmp_path):
    common = ["certify.py", f"--workdir={workdir}", "--progress=false",
              "--config.certify.n0=8", "--config.certify.n=32", "--config.certify.batch_size=16",
              "--config.certify.margin_samples=16"]
    assert certify.run(common + [f"--out_dir={tmp_path / 'a'}", "--config.certify.max_examples=2"]) == 0
    assert certify.run(common + [f"--out_dir={tmp_path / 'b'}", "--max=2"]) == 0
    a, b = (json.loads((tmp_path / d / "certify_sigma0.25_summary.json").read_text())
            for d in "ab")
    assert a["settings"]["n"] == 32 and a["num_images"] == 2
    assert a["settings"]["margin_precision"] == "float32"
    assert "float32 matmuls" in a["certificates"]["margin"]["classifier"]
    assert a["certificates"] == b["certificates"]


@pytest.mark.parametrize("args, message", [
    (["--config.model.widths=(2,2,2)"],
     "--config.model.widths: certify.py can override only config.certify, config.dataset.data_dir"),
    (["--config.certify.n=abc"], "flag --config.certify.n=abc: invalid literal"),
    (["--config.certify.no_such=1"], "the config has no field"),
    (["--n=100", "--config.certify.n=200"], "--n=100 and its --config override 200 disagree"),
    (["--lowpass_form=fft"], "flag --lowpass_form=fft: value should be one of <einsum|matmul|kron>"),
    (["--sigma=-0.5"], "sigma must be finite and > 0, got -0.5"),
])
def test_certify_errors_are_one_line(workdir, tmp_path, capsys, args, message):
    argv = ["certify.py", f"--workdir={workdir}", f"--out_dir={tmp_path}", "--progress=false", *args]
    assert certify.run(argv) == 1
    assert message in _error_line(capsys, "certify.py")
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("args, message", [
    (["--config.training.num_steps=3"], "attack.py can override only config.attack"),
    (["--config.attack.n_iter=abc"], "flag --config.attack.n_iter=abc"),
    (["--eps=0,x"], "--eps must be comma-separated numbers"),
    (["--attacks=nope"], "unknown attack 'nope'"),
    (["--eps=0,-0.1"], "eps must be >= 0"),
    (["--norm=l3"], "unknown norm 'l3'"),
])
def test_attack_errors_are_one_line(workdir, tmp_path, capsys, args, message):
    argv = ["attack.py", f"--workdir={workdir}", f"--out_dir={tmp_path / 'out'}",
            "--progress=false", *args]
    assert attack.run(argv) == 1
    assert message in _error_line(capsys, "attack.py")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tool", [certify, attack])
def test_missing_workdir_is_one_line(tool, tmp_path, capsys):
    prog = tool.__name__ + ".py"
    assert tool.run([prog, f"--workdir={tmp_path / 'nothing'}"]) == 1
    assert "no training run" in _error_line(capsys, prog)


def _corrupt_latest(run):
    step = checkpointing.Checkpointer(str(run)).latest_step()
    for path in (run / "checkpoints" / str(step) / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    return step


@pytest.mark.parametrize("tool", [certify, attack])
def test_corrupt_checkpoint_is_one_line_naming_the_intact_step(tool, workdir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    step = _corrupt_latest(run)
    log = run / "certify_sigma0.25.tsv"
    log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t1.0\n")
    before = log.read_bytes()
    prog = tool.__name__ + ".py"
    assert tool.run([prog, f"--workdir={run}", "--progress=false"]) == 1
    assert log.read_bytes() == before
    line = _error_line(capsys, prog)
    assert f"checkpoint step {step}" in line and "corrupt" in line
    assert f"step {step - 5} is intact: --step {step - 5} uses it" in line
    assert len(line) < 800


def test_missing_data_is_one_line(tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_npz(data_dir / "dermamnist.npz")
    run = tmp_path / "run"
    assert train.run(["train.py", f"--config={ROOT}/configs/medmnist.py:{data_dir}/dermamnist.npz",
                      f"--workdir={run}", *ONE_STEP, *ONE_STREAM]) == 0
    os.remove(data_dir / "dermamnist.npz")
    capsys.readouterr()
    for tool in (certify, attack):
        prog = tool.__name__ + ".py"
        assert tool.run([prog, f"--workdir={run}", "--progress=false"]) == 1
        assert "MedMNIST file not found" in _error_line(capsys, prog)
    assert np.isfinite(json.loads((run / "final_metrics.json").read_text())["step"])
