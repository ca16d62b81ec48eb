import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hycas_jax import training
from hycas_jax.config import experiment
from hycas_jax.runtime import checkpointing
from hycas_jax.training import metrics as training_metrics

sys.path.insert(0, os.path.dirname(__file__))
import tiny_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "tiny_config.py")


def _train_cli(workdir, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), f"--config={CONFIG}",
           f"--workdir={workdir}", "--progress=false", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _params(workdir):
    model, _, step = training.restore_model(workdir)
    from flax import nnx
    return step, jax.tree.leaves(nnx.state(model))


@pytest.fixture(scope="module")
def reference_run(tiny_run):
    """The tiny config trained uninterrupted (conftest's session run)."""
    return str(tiny_run)


def _metric_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _event_scalars(workdir):
    """[(tag, step)] of every scalar in the run's TensorBoard event files."""
    from tensorboardX.proto import event_pb2
    out = []
    for path in glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")):
        for data in training_metrics.read_events(path):
            event = event_pb2.Event.FromString(data)
            out += [(v.tag, event.step) for v in event.summary.value]
    return out


@pytest.mark.subprocess
def test_killed_run_resumes_to_the_same_final_state_and_logs_each_step_once(reference_run,
                                                                             tmp_path):
    workdir = str(tmp_path / "killed")
    # Checkpoints every 20 steps, metrics every 5: the kill comes after rows that the
    # resumed run logs again.
    proc = _train_cli(workdir, "--config.training.checkpoint_every=20")
    saved = os.path.join(workdir, "checkpoints", "20")  # orbax renames a step's dir when done
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if os.path.isdir(saved) and any(r["step"] > 20 for r in _metric_rows(workdir)):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = checkpointing.Checkpointer(workdir).latest_step()
    assert killed_at == 20
    # What the killed run logged past its checkpoint is on disk (flushed), in both sinks.
    assert max(r["step"] for r in _metric_rows(workdir)) > killed_at
    assert max(step for tag, step in _event_scalars(workdir) if tag == "loss") > killed_at
    proc = _train_cli(workdir, "--config.training.checkpoint_every=20")
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    step_a, ref = _params(reference_run)
    step_b, resumed = _params(workdir)
    assert step_a == step_b == 40
    for a, b in zip(ref, resumed):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Each step's metrics exactly once, in metrics.jsonl and in TensorBoard.
    rows = _metric_rows(workdir)
    assert [r["step"] for r in rows if not r.get("final")] == list(range(5, 41, 5))
    assert [r["step"] for r in rows if r.get("final")] == [40]
    scalars = _event_scalars(workdir)
    assert len(scalars) == len(set(scalars)), "a scalar is logged twice"
    assert sorted(step for tag, step in scalars if tag == "loss") == list(range(5, 41, 5))
    assert sorted(_event_scalars(reference_run)) == sorted(scalars)


def test_metrics_and_final_results_are_written(reference_run):
    files = os.listdir(reference_run)
    for name in ("config.json", "metrics.jsonl", "final_metrics.json", "tensorboard", "checkpoints"):
        assert name in files
    lines = open(os.path.join(reference_run, "metrics.jsonl")).read().splitlines()
    assert any('"lipschitz_bound"' in line and '"clean_accuracy"' in line for line in lines)
    # What noise RANI has left, at every logging step and at the end.
    rows = [json.loads(line) for line in lines]
    assert all(0.1165 <= r["rani/min_mask_sd"] <= 0.5 for r in rows), rows


def test_evaluation_scores_the_noisy_pass_at_the_sigma_asked_for(reference_run):
    """The noisy pass defaults to the training sigma; another sigma is another pass (huge
    noise leaves the tiny model near chance), and sigma 0 is the clean pass."""
    from hycas_jax import training
    default = training.evaluate_workdir(reference_run, max_examples=128)
    same = training.evaluate_workdir(reference_run, max_examples=128, sigma=0.25)
    assert default == same  # tiny_config trains at sigma 0.25
    zero = training.evaluate_workdir(reference_run, max_examples=128, sigma=0.0)
    assert zero["test_noisy_accuracy"] == zero["test_clean_accuracy"] == default["test_clean_accuracy"]
    loud = training.evaluate_workdir(reference_run, max_examples=128, sigma=8.0)
    assert loud["test_clean_accuracy"] == default["test_clean_accuracy"]
    assert loud["test_noisy_accuracy"] < default["test_clean_accuracy"]
    assert loud["test_noisy_accuracy"] != default["test_noisy_accuracy"]


def _corrupt(workdir):
    step = checkpointing.Checkpointer(workdir).latest_step()
    state_dir = os.path.join(workdir, "checkpoints", str(step), "state")
    victims = {}
    for root, _, names in os.walk(state_dir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "wb") as f:
                f.write(b"garbage")
            victims[path] = b"garbage"
    return step, victims


def test_corrupt_latest_checkpoint_names_the_intact_one_and_training_resumes_from_it(
        reference_run, tmp_path):
    import shutil
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(reference_run, workdir)
    step, victims = _corrupt(workdir)
    intact = step - 5
    with pytest.raises(checkpointing.CheckpointError,
                       match=f"step {step}.*corrupt.*step {intact} is intact: --step {intact}"):
        training.restore_model(workdir)
    assert training.restore_model(workdir, intact)[2] == intact
    config = checkpointing.restore_config(workdir)
    training.train(config, workdir, progress=False)
    # Nothing deleted: the corrupt step's files were moved aside, byte for byte.
    aside = os.path.join(workdir, "corrupt_checkpoints", str(step))
    for path, content in victims.items():
        moved = os.path.join(aside, os.path.relpath(path, os.path.join(workdir, "checkpoints",
                                                                      str(step))))
        assert open(moved, "rb").read() == content
    _, ref = _params(reference_run)
    latest, resumed = _params(workdir)
    assert latest == step
    for a, b in zip(ref, resumed):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_missing_workdir_or_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(checkpointing.CheckpointError, match="config.json is missing"):
        training.restore_model(str(tmp_path / "nowhere"))
    workdir = str(tmp_path / "config_only")
    checkpointing.save_config(workdir, tiny_config.get_config())
    with pytest.raises(checkpointing.CheckpointError, match="no checkpoint"):
        training.restore_model(workdir)


def test_a_different_config_in_the_same_workdir_is_refused(tmp_path):
    workdir = str(tmp_path / "w")
    checkpointing.save_config(workdir, tiny_config.get_config())
    other = tiny_config.get_config()
    other.training.sigma = 0.5
    with pytest.raises(checkpointing.CheckpointError, match="different config"):
        training.train(other, workdir, progress=False)


def test_data_that_does_not_match_the_config_is_refused(tmp_path):
    config = tiny_config.get_config()
    config.model.num_classes = 7
    with pytest.raises(ValueError, match="10 classes"):
        training.train(config, str(tmp_path / "w"), progress=False)
    with pytest.raises(ValueError, match="(?i)unknown dataset"):
        training.train(experiment("no_such_set", backbone="small_cnn", image_shape=(8, 8, 1),
                                  num_classes=10), str(tmp_path / "x"), progress=False)


@pytest.mark.parametrize("kind", ["plain", "lipschitz"])
def test_baselines_train_and_adversarial_training_runs(kind, tmp_path):
    config = tiny_config.get_config(kind)
    config.training.num_steps = 4
    if kind == "plain":
        config.training.adversarial.enabled = True
        config.training.adversarial.steps = 2
    final = training.train(config, str(tmp_path / kind), progress=False)
    assert final["step"] == 4 and np.isfinite(final["lipschitz_bound"])
    assert 0.0 <= final["test_clean_accuracy"] <= 1.0


def test_a_step_that_was_never_saved_is_named(reference_run):
    with pytest.raises(checkpointing.CheckpointError, match="no checkpoint at step 7.*available"):
        training.restore_model(reference_run, step=7)


def test_resuming_on_another_mesh_is_allowed(tmp_path):
    workdir = str(tmp_path / "w")
    config = tiny_config.get_config()
    checkpointing.save_config(workdir, config)
    config.mesh.data = 1
    checkpointing.save_config(workdir, config)  # no error: where it runs, not what it computes


def test_a_bad_config_writes_nothing_so_the_fixed_command_can_run(tmp_path):
    workdir = tmp_path / "w"
    config = tiny_config.get_config()
    config.model.kind = "magic"
    with pytest.raises(ValueError, match="unknown model kind"):
        training.train(config, str(workdir), progress=False)
    assert not workdir.exists()


def test_checkpoints_keep_each_process_iterator_position_and_read_the_old_layout(tmp_path):
    from hycas_jax import data
    config = tiny_config.get_config()
    make = lambda: data.train_iterator(config.dataset.name, batch_size=8, seed=0)  # noqa: E731
    it = make()
    for _ in range(3):
        next(it)
    want = next(_advanced(make, 4))["label"]
    target = {"x": np.zeros(2, np.float32)}
    for name, save in (("new", lambda c: c.save(1, target, {}, iterator=it)),
                       ("old", lambda c: c.save(1, target, {"data": it.get_state()}))):
        ckpt = checkpointing.Checkpointer(str(tmp_path / name))
        save(ckpt)
        ckpt.wait()
        fresh = make()
        step, _, _, _ = ckpt.restore_newest_intact(target, iterator=fresh)
        ckpt.close()
        assert step == 1
        np.testing.assert_array_equal(next(fresh)["label"], want, err_msg=name)
    assert os.path.exists(tmp_path / "new" / "checkpoints" / "1" / "data" / "process_0-of-1.json")


def _advanced(make, n):
    it = make()
    for _ in range(n - 1):
        next(it)
    return it


def test_a_second_uncoordinated_run_on_the_workdir_is_refused(tmp_path):
    from hycas_jax.runtime import runlock
    workdir = tmp_path / "w"
    workdir.mkdir()
    lock = str(workdir / training.loop.LOCK_FILE)
    with runlock.exclusive(lock, "w"):  # another run holds it (flock: per open file)
        with pytest.raises(runlock.BusyError, match=r"workdir .* is in use by another run \(pid"):
            training.train(tiny_config.get_config(), str(workdir), progress=False)
    assert not (workdir / "config.json").exists()
