"""The path layer of config.json and the metrics: the same files whether written in place
(local disks) or rewritten whole (object stores such as gs://), tested on local paths."""
import json

import pytest
import tiny_config

from hycas_jax.runtime import checkpointing, files
from hycas_jax.training import metrics


def _run_writes(workdir):
    """config.json, then metrics across a resume: what a preempted run writes."""
    checkpointing.save_config(str(workdir), tiny_config.get_config())
    w = metrics.MetricsWriter(str(workdir), start_step=0)
    for step in (5, 10, 15):
        w.write(step, {"loss": 1.0 / step})
    w = metrics.MetricsWriter(str(workdir), start_step=10)  # resumed from step 10
    w.write(15, {"loss": 0.5})
    w.write(15, {"test_clean_accuracy": 0.9}, final=True)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    scalars = sorted(
        (v.tag, e.step, round(v.simple_value, 6))
        for path in (workdir / "tensorboard").glob("events.out.tfevents.*")
        for e in map(_event, metrics.read_events(path)) for v in e.summary.value)
    return checkpointing.load_config(str(workdir)).to_dict(), rows, scalars


def _event(data):
    from tensorboardX.proto import event_pb2
    return event_pb2.Event.FromString(data)


@pytest.mark.parametrize("local", [True, False])
def test_config_and_metrics_survive_a_resume_on_both_kinds_of_store(local, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "is_local", lambda p: local)
    config, rows, scalars = _run_writes(tmp_path)
    assert config["training"]["num_steps"] == tiny_config.get_config().training.num_steps
    assert [(r["step"], r.get("final", False)) for r in rows] == [
        (5, False), (10, False), (15, False), (15, True)]
    assert rows[2]["loss"] == 0.5  # the resumed run's row, the killed run's dropped
    assert scalars == [("final/test_clean_accuracy", 15, 0.9), ("loss", 5, 0.2),
                       ("loss", 10, 0.1), ("loss", 15, 0.5)]


def test_replace_and_append_bytes(tmp_path, monkeypatch):
    for local in (True, False):
        monkeypatch.setattr(files, "is_local", lambda p: local)
        path = tmp_path / f"f{local}"
        files.append_bytes(path, b"a")
        files.append_bytes(path, b"b")
        assert path.read_bytes() == b"ab"
        files.replace_bytes(path, b"c")
        assert path.read_bytes() == b"c" and not (tmp_path / f"f{local}.tmp").exists()


@pytest.mark.parametrize("local", [True, False])
def test_append_log_drops_a_torn_line_and_checks_its_header(local, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "is_local", lambda p: local)
    path = tmp_path / "log"
    log = files.AppendLog(path, "a\tb")
    log.append("1\t2")
    with open(path, "ab") as f:
        f.write(b"3\t")  # a row cut by a kill
    resumed = files.AppendLog(path, "a\tb")
    assert resumed.lines == ["1\t2"] and path.read_bytes() == b"a\tb\n1\t2\n"
    resumed.append("3\t4")
    assert files.AppendLog(path, "a\tb").lines == ["1\t2", "3\t4"]
    with pytest.raises(ValueError, match="expected 'x'"):
        files.AppendLog(path, "x")
