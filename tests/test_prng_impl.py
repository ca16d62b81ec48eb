"""Key implementations (`config.prng_impl`, hycas_jax.rng.IMPLS) end to end: train.py,
certify.py and attack.py make every key with the run's choice and record it; the same
key gives the same certificates; the implementations certify alike on the linear
ground truth."""
import json
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from scipy import stats

from hycas_jax import rng
from hycas_jax.certification import smoothing
from hycas_jax.runtime import checkpointing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from test_cli import ONE_STEP, ONE_STREAM, TINY  # noqa: E402
from test_smoothing import SIGMA, linear_problem, noisy_linear_logits  # noqa: E402

import attack  # noqa: E402
import certify  # noqa: E402
import train  # noqa: E402

CERTIFY = ["--progress=false", "--n0=8", "--n=32", "--batch_size=16", "--margin_samples=16",
           "--max=2"]


def _summary(out):
    return json.loads((Path(out) / "certify_sigma0.25_summary.json").read_text())


def _rows(out):
    lines = (Path(out) / "certify_sigma0.25.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    timed = [i for i, name in enumerate(header) if "time" in name]
    return [[v for i, v in enumerate(line.split("\t")) if i not in timed] for line in lines]


@pytest.mark.parametrize("impl", [rng.IMPLS[0], *(pytest.param(i, marks=pytest.mark.slow)
                                                   for i in rng.IMPLS[1:])])
def test_each_key_implementation_runs_train_certify_and_attack(impl, tmp_path):
    run = tmp_path / "run"
    assert train.run(["train.py", f"--config={TINY}", f"--workdir={run}", *ONE_STEP,
                      *ONE_STREAM, f"--config.prng_impl={impl}"]) == 0
    assert checkpointing.restore_config(str(run)).prng_impl == impl
    for out in ("a", "b"):
        assert certify.run(["certify.py", f"--workdir={run}", f"--out_dir={tmp_path / out}",
                            *CERTIFY]) == 0
    assert _summary(tmp_path / "a")["settings"]["prng_impl"] == impl
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")  # same keys, same certificates
    assert attack.run(["attack.py", f"--workdir={run}", f"--out_dir={tmp_path / 'att'}",
                       "--progress=false", "--max=2", "--n_iter=2", "--eot_iter=1", "--eps=0.1",
                       "--attacks=apgd-ce", "--rules=single", "--repeats=1"]) == 0
    summary = json.loads((tmp_path / "att" / "attack_summary.json").read_text())
    assert summary["settings"]["prng_impl"] == impl


def test_the_flag_overrides_the_run_and_is_refused_on_resume(tiny_run, tmp_path, capsys):
    args = ["certify.py", f"--workdir={tiny_run}", f"--out_dir={tmp_path}", *CERTIFY]
    assert certify.run(args + ["--prng_impl=rbg"]) == 0
    assert _summary(tmp_path)["settings"]["prng_impl"] == "rbg"
    capsys.readouterr()
    assert certify.run(args) == 1  # threefry2x32 (the run's) would mix two key streams
    assert "prng_impl: 'rbg' -> 'threefry2x32'" in capsys.readouterr().err
    assert certify.run(args[:-1] + ["--prng_impl=philox"]) == 1
    assert "philox" in capsys.readouterr().err


def test_a_config_from_before_the_choice_uses_threefry():
    assert rng.config_impl(ml_collections.ConfigDict({"seed": 0})) == "threefry2x32"
    with pytest.raises(ValueError, match="unknown prng_impl 'philox'"):
        rng.config_impl({"prng_impl": "philox"})


def test_same_key_same_draws_for_every_implementation():
    for impl in rng.IMPLS:
        a, b = (jax.random.normal(jax.random.fold_in(rng.key(7, impl), 3), (64,)) for _ in "ab")
        np.testing.assert_array_equal(a, b)
        assert str(jax.random.key_impl(rng.key(7, impl))) == impl


def test_implementations_certify_alike_on_the_linear_ground_truth():
    """The stochastic linear classifier's top-class count at one image: each implementation's
    count is Binomial(n, p) with the same p, so any two differ by no more than sampling
    noise (a two-proportion z-test at 1e-4), and each pA lower bound sits below the
    pooled estimate."""
    params, x = linear_problem(np.array([0.15]))[:2]
    n = 20_000
    counts = {}
    for impl in rng.IMPLS:
        r = smoothing.certify(noisy_linear_logits, params, x, rng.key(11, impl), num_classes=2,
                              sigma=SIGMA, n0=100, n=n, alpha=1e-3, batch_size=5000)
        assert r.prediction[0] == 1 and r.radius[0] > 0
        counts[impl] = int(r.counts[0, 1])
    pooled = sum(counts.values()) / (n * len(counts))
    se = np.sqrt(2 * pooled * (1 - pooled) / n)
    for a in rng.IMPLS:
        for b in rng.IMPLS:
            assert abs(counts[a] - counts[b]) / n <= stats.norm.ppf(1 - 1e-4 / 2) * se, counts
