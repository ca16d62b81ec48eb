"""Runs training and certification on several simulated CPU devices or processes.

Started by tests/test_distributed.py in a fresh interpreter, because the number
of CPU devices is fixed when JAX starts:

    python distributed_worker.py certify OUT
        8 devices: CERTIFY/PREDICT of a stochastic toy classifier with and
        without an 8-device mesh.
    python distributed_worker.py train OUT WORKDIR
        8 devices: trains on the 8-device mesh and on a 1-device mesh, and
        certifies the first model with and without the mesh.
    python distributed_worker.py process OUT WORKDIR ADDRESS NUM_PROCESSES PROCESS_ID
        one of several processes (2 CPU devices each) joined by jax.distributed:
        trains on their common mesh, restores the model replicated and
        certifies across all devices; runs certify_workdir and attack_workdir
        (certify.py's and attack.py's work); process 0 writes OUT.
Each writes its results to OUT (.npz).
"""
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

MODE = sys.argv[1]
jax.config.update("jax_num_cpu_devices", 2 if MODE == "process" else 8)

from hycas_jax.runtime import distributed  # noqa: E402

if MODE == "process":  # before anything starts the XLA backend (some imports below do)
    distributed.initialize(sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hycas_jax import training  # noqa: E402
from hycas_jax.certification import montecarlo, smoothing
from hycas_jax.evaluation import AttackSettings, CertifySettings, attack_workdir, certify_workdir  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distributed_common as common  # noqa: E402


def toy_logits(params, x, key):
    """A stochastic classifier whose votes hinge on every sample's key."""
    scores = x.reshape(x.shape[0], -1) @ params
    return scores + jax.random.normal(key, scores.shape)


def certify_mode(out_path):
    params = jnp.asarray(np.random.default_rng(0).normal(size=(16, 5)), jnp.float32)
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 4, 4, 1)), jnp.float32)
    mesh = distributed.make_mesh({"data": 4, "model": 2})
    out = {}
    for name, m in (("mesh", mesh), ("single", None)):
        kw = dict(num_classes=5, sigma=0.25, batch_size=7, mesh=m)
        r = smoothing.certify(toy_logits, params, x, jax.random.key(3), n0=30, n=500, **kw)
        p = smoothing.predict(toy_logits, params, x, jax.random.key(4), n=300, **kw)
        s = montecarlo.sample_stats(toy_logits, params, x, jax.random.key(5), num=100,
                                   chunk_size=7, num_classes=5, sigma=0.25, logit_bound=2.0,
                                   mesh=m)
        out.update({f"{k}_{name}": v for k, v in r._asdict().items()})
        out.update({f"predict_{k}_{name}": v for k, v in p._asdict().items()})
        out[f"logit_sum_{name}"], out[f"error_{name}"] = s.logit_sum, s.logit_sum_error
    try:
        distributed.check_divisible(12, distributed.make_mesh({"data": 8}))
        out["indivisible_batch_refused_mesh"] = False
    except ValueError:
        out["indivisible_batch_refused_mesh"] = True
    np.savez(out_path, **out)


def train_mode(out_path, workdir):
    result = {}
    for data_size in (8, 1):
        run = os.path.join(workdir, f"data{data_size}")
        training.train(common.config(data_size), run, progress=False)
        model, _, _ = training.restore_model(run)
        result.update({f"{k}_data{data_size}": v for k, v in common.leaves(model).items()})
    mesh8 = distributed.make_mesh({"data": 8, "model": 1})
    for name, mesh in (("mesh", mesh8), ("single", None)):
        certs = common.certify_workdir(os.path.join(workdir, "data8"), mesh)
        result.update({f"{k}_{name}": v for k, v in certs.items()})
    np.savez(out_path, **result)


def process_mode(out_path, workdir, *start_up):
    del start_up  # used above, before the imports
    assert jax.local_device_count() == 2
    training.train(common.config(), workdir, progress=False)
    mesh = distributed.make_mesh({"data": -1, "model": 1})
    model, _, _ = training.restore_model(workdir, mesh=mesh)
    result = {**common.certify_workdir(workdir, mesh), **common.leaves(model)}
    # certify.py's and attack.py's runs: samples over both processes' devices, one log.
    summary = certify_workdir(workdir, CertifySettings.of_workdir(workdir, **common.CERTIFY_RUN),
                              out_dir=os.path.join(workdir, "cert"), progress=False)
    assert (summary is None) == (jax.process_index() != 0)
    attack = attack_workdir(workdir, AttackSettings.of_workdir(workdir, **common.ATTACK_RUN),
                            progress=False, quiet=True)
    assert (attack is None) == (jax.process_index() != 0)
    if jax.process_index() == 0:
        np.savez(out_path, **result)


if __name__ == "__main__":
    {"certify": certify_mode, "train": train_mode, "process": process_mode}[MODE](*sys.argv[2:])
