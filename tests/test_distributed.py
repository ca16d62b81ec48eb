"""Tests for hycas_jax.runtime.distributed and the sharded training and certification paths.

This pytest process has one CPU device; runs on 8 simulated devices or on 2
processes happen in subprocesses (tests/distributed_worker.py), whose results
are compared with one-device runs.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import portpicker
import pytest

from hycas_jax import data, training
from hycas_jax.certification import smoothing
from hycas_jax.evaluation import AttackSettings, CertifySettings, attack_workdir, certify_workdir
from hycas_jax.runtime import distributed
from hycas_jax.training import loop

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import distributed_common as common  # noqa: E402

WORKER = os.path.join(HERE, "distributed_worker.py")


def _worker(*args):
    return subprocess.Popen([sys.executable, WORKER, *map(str, args)], cwd=HERE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _finish(proc, timeout=900):
    out = proc.communicate(timeout=timeout)[0].decode()
    assert proc.returncode == 0, out[-5000:]


def _assert_same_certification(got: dict, want: dict):
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# ------------------------------------------------------------------ in process

def test_mesh_sizes_and_errors():
    mesh = distributed.make_mesh({"data": -1, "model": 1})
    assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
    with pytest.raises(ValueError, match="'data' axis"):
        distributed.make_mesh({"batch": -1})
    with pytest.raises(ValueError, match="at most one -1"):
        distributed.make_mesh({"data": -1, "model": -1})
    with pytest.raises(ValueError, match="does not fit"):
        distributed.make_mesh({"data": 1, "model": jax.device_count() + 1})


def test_replicate_keeps_arrays_already_on_the_mesh_and_keys():
    mesh = distributed.make_mesh({"data": 1})
    tree = {"w": np.arange(6.0).reshape(2, 3), "key": jax.random.key(3)}
    once = distributed.replicate(tree, mesh)
    assert once["w"].sharding == distributed.replicated(mesh)
    assert distributed.replicate(once, mesh)["w"] is once["w"]
    np.testing.assert_array_equal(jax.random.key_data(once["key"]),
                                  jax.random.key_data(tree["key"]))


def test_one_device_mesh_certifies_like_no_mesh():
    def logits(params, x, key):
        return x.reshape(x.shape[0], -1) @ params + jax.random.normal(key, (x.shape[0], 3))
    params = jnp.ones((4, 3)) * jnp.array([0.0, 1.0, 2.0])
    x = jnp.full((2, 2, 2, 1), 0.1)
    kw = dict(num_classes=3, sigma=0.5, n0=10, n=50, batch_size=8)
    a = smoothing.certify(logits, params, x, jax.random.key(0), **kw)
    b = smoothing.certify(logits, params, x, jax.random.key(0),
                          mesh=distributed.make_mesh({"data": 1}), **kw)
    _assert_same_certification(a._asdict(), b._asdict())


# ------------------------------------------------------------------ 8 devices

@pytest.mark.subprocess
def test_eight_devices_certify_exactly_like_one(tmp_path):
    out = tmp_path / "certify.npz"
    _finish(_worker("certify", out))
    res = np.load(out)
    names = sorted(k[:-len("_mesh")] for k in res.files if k.endswith("_mesh"))
    for name in names:
        if name in ("logit_sum", "error", "indivisible_batch_refused"):
            continue
        np.testing.assert_array_equal(res[f"{name}_mesh"], res[f"{name}_single"], err_msg=name)
    assert res["counts_single"].sum(axis=1).tolist() == [500] * 3
    assert res["indivisible_batch_refused_mesh"]
    # Sums regroup across devices: equal up to the rounding bound both report.
    np.testing.assert_allclose(res["logit_sum_mesh"], res["logit_sum_single"], rtol=0,
                               atol=float(res["error_mesh"] + res["error_single"]))


@pytest.mark.slow
@pytest.mark.subprocess
def test_eight_devices_train_and_certify_like_one(tmp_path):
    out = tmp_path / "train.npz"
    _finish(_worker("train", out, tmp_path / "runs"))
    res = np.load(out)
    params = sorted(k[:-len("_data8")] for k in res.files if k.endswith("_data8"))
    assert params
    for name in params:
        np.testing.assert_allclose(res[f"{name}_data8"], res[f"{name}_data1"], rtol=1e-4,
                                   atol=1e-5, err_msg=name)
    certs = sorted(k[:-len("_mesh")] for k in res.files if k.endswith("_mesh"))
    _assert_same_certification({k: res[f"{k}_mesh"] for k in certs},
                               {k: res[f"{k}_single"] for k in certs})


# ------------------------------------------------------------------ 2 processes

def _reference_training():
    """One device, fed the global batches the 2 processes build: process 0's
    share, then process 1's (their devices' order in the mesh)."""
    config = common.config()
    graphdef, state, tx = loop.initial_state(config)
    step = training.train_step(graphdef, tx, config.training)
    iterators = [data.train_iterator(config.dataset.name, batch_size=config.training.batch_size,
                                     seed=config.training.seed, process_index=p, process_count=2)
                 for p in range(2)]
    root_key = loop._keys(config.training.seed)[1]
    for _ in range(common.NUM_STEPS):
        shares = [next(it) for it in iterators]
        batch = {k: np.concatenate([s[k] for s in shares]) for k in shares[0]}
        state, _ = step(state, batch, root_key)
    return loop.model_from_state(graphdef, state)


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_processes_train_and_certify_like_one(tmp_path):
    out, workdir = tmp_path / "two.npz", tmp_path / "run"
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"
    procs = [_worker("process", out, workdir, address, 2, p) for p in range(2)]
    for proc in procs:
        _finish(proc)
    res = dict(np.load(out))
    want = common.leaves(_reference_training())
    assert want.keys() <= res.keys()
    for name, value in want.items():
        np.testing.assert_allclose(res.pop(name), value, rtol=1e-4, atol=1e-5, err_msg=name)
    # The same checkpoint certified on this single device gives the same numbers.
    _assert_same_certification(res, common.certify_workdir(str(workdir)))
    # certify.py's run over both processes: the rows of a one-process run, written once.
    one = tmp_path / "one"
    certify_workdir(str(workdir), CertifySettings.of_workdir(workdir, **common.CERTIFY_RUN),
                    out_dir=str(one), progress=False)
    two_log = (workdir / "cert" / "certify_sigma0.25.tsv").read_text().splitlines()
    one_log = (one / "certify_sigma0.25.tsv").read_text().splitlines()
    assert len(two_log) == len(one_log) == 4
    untimed = lambda lines: [[c for i, c in enumerate(line.split("\t")) if i != 5 and i < 9]
                             for line in lines]  # time (col 5) and float32 margin sums aside
    assert untimed(two_log) == untimed(one_log)
    # attack.py's run: process 0 attacks and writes, the other waits; the numbers of one.
    two_attack = json.loads((workdir / "attack" / "attack_summary.json").read_text())
    one_attack = attack_workdir(str(workdir), AttackSettings.of_workdir(workdir, **common.ATTACK_RUN),
                                out_dir=str(tmp_path / "attack1"), progress=False, quiet=True)
    assert two_attack["table"] == one_attack["table"]
    assert os.path.exists(workdir / "metrics.jsonl")
    lines = open(workdir / "metrics.jsonl").read().splitlines()
    assert len(lines) == 2, "only process 0 writes metrics (one log step, one final line)"
