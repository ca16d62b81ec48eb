"""attack_workdir and attack.py on one tiny trained workdir: outputs, eps = 0
equals clean accuracy, robust accuracy falls with eps, resume does no new work
(also after a kill mid-line), CLI errors; and, on a toy smoothed classifier,
empirical robust accuracy (vote rule) >= certified accuracy at the same l2 radius."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hycas_jax import config as configs
from hycas_jax import data, training
from hycas_jax.attacks import score_vote
from hycas_jax.certification import smoothing
from hycas_jax.evaluation import AttackSettings, attack_run, attacker

REPO = Path(__file__).resolve().parents[1]
EPS = (0.0, 0.1, 0.3)
# Small enough to compile and run in well under a minute on 2 CPU cores.
RUN = dict(eps=EPS, attacks=("apgd-ce",), rules=("single", "vote"), max_examples=16,
           batch_size=16, n_iter=3, eot_iter=2, vote_samples=16, repeats=4)
CLI_RUN = ["--eps", ",".join(map(str, EPS)), "--attacks", "apgd-ce", "--rules", "single,vote",
           "--max", "16", "--batch_size", "16", "--n_iter", "3", "--eot_iter", "2",
           "--vote_samples", "16", "--repeats", "4", "--progress=false"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A HyCAS small CNN on digits8x8 after 30 steps (stochastic: RANI)."""
    c = configs.experiment("digits8x8")
    c.model.widths, c.model.strides, c.model.streams = (4, 8, 8), (2, 2, 1), (("sncan",),) * 3
    t = c.training
    t.num_steps, t.batch_size, t.learning_rate, t.warmup_steps = 30, 32, 0.03, 0
    t.log_every = t.checkpoint_every = 30
    path = tmp_path_factory.mktemp("attack") / "run"
    training.train(c, str(path), progress=False)
    return path


def _attack(workdir, out_dir=None):
    """attack_workdir with the workdir config's settings and RUN over them."""
    return attack_run.attack_workdir(workdir, AttackSettings.of_workdir(workdir, **RUN),
                                     out_dir=out_dir, progress=False)


@pytest.fixture(scope="module")
def first_run(workdir):
    return _attack(workdir)


def _accuracy(summary, rule):
    """{eps: accuracy} of the only attack, for ``rule``."""
    return {r["eps"]: r["accuracy"] for r in summary["robust"] if r["rule"] == rule}


def _results(summary):
    return {k: summary[k] for k in ("clean", "robust", "table", "n_examples")}


def test_writes_table_summary_and_plot(workdir, first_run):
    out = workdir / "attack"
    assert json.loads((out / "attack_summary.json").read_text())["robust"] == first_run["robust"]
    table = (out / "robust_accuracy.md").read_text()
    assert "| apgd-ce | single |" in table and "| apgd-ce | vote |" in table
    assert "sigma=0.25 (training sigma)" in table  # the vote names its sigma
    assert (out / "robust_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert first_run["n_examples"] == 16 and first_run["model_stochastic"]
    # The 16 images are spread over the whole test split, not its first 16.
    num_test = len(data.get_source("digits8x8", "test")[0])
    assert first_run["settings"]["stride"] == num_test // 16 > 1
    assert first_run["units_run"] == len(open(out / "attacks.jsonl").readlines()) == 2 * (1 + 3)


def test_eps_zero_equals_clean_accuracy(first_run):
    for rule in ("single", "vote"):
        assert _accuracy(first_run, rule)[0.0] == first_run["clean"][rule]["accuracy"]


def test_robust_accuracy_does_not_rise_with_eps(first_run):
    for rule in ("single", "vote"):
        acc = _accuracy(first_run, rule)
        for small, large in zip(EPS, EPS[1:]):
            # Common random numbers across eps: a rise beyond one image is not noise.
            assert acc[large] <= acc[small] + 1 / 16, (rule, acc)
    assert _accuracy(first_run, "single")[0.3] < first_run["clean"]["single"]["accuracy"]


def test_rerun_does_no_new_work(workdir, first_run):
    log = workdir / "attack" / "attacks.jsonl"
    before = log.read_text()
    again = _attack(workdir)
    assert again["units_run"] == 0 and log.read_text() == before
    assert _results(again) == _results(first_run)


def test_kill_mid_line_loses_only_that_unit(workdir, first_run, tmp_path):
    lines = (workdir / "attack" / "attacks.jsonl").read_text().splitlines(keepends=True)
    # Lose the clean 'vote' unit (line order does not matter; it needs no attack
    # compile) as a kill while writing the last line would.
    lost = next(i for i, line in enumerate(lines) if '"clean"' in line and '"vote"' in line)
    kept = lines[:lost] + lines[lost + 1:]
    (tmp_path / "attacks.jsonl").write_text("".join(kept) + lines[lost][:40])
    resumed = _attack(workdir, out_dir=tmp_path)
    assert resumed["units_run"] == 1
    assert _results(resumed) == _results(first_run)


def _cli(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "attack.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.subprocess
def test_cli_runs_and_resumes(workdir, first_run):
    done = _cli("--workdir", str(workdir), *CLI_RUN)
    assert done.returncode == 0, done.stderr
    assert first_run["table"] in done.stdout
    summary = json.loads((workdir / "attack" / "attack_summary.json").read_text())
    assert summary["units_run"] == 0


def test_autoattack_version_follows_the_target():
    fn = lambda params, x, key: x.reshape(x.shape[0], -1)
    deterministic = attacker.make_target(fn, stochastic=False)
    assert attacker.attack_label("autoattack", deterministic) == "autoattack-standard"
    assert attacker.attack_label("autoattack", attacker.make_target(
        fn, stochastic=False, sigma=0.25)) == "autoattack-rand"
    assert attacker.attack_label("apgd-ce", deterministic) == "apgd-ce"


K, SIGMA, RADIUS, ALPHA, M = 4, 0.25, 0.15, 0.001, 500


def noisy_linear(params, x, key):
    """(B, 8, 8, 1) -> (B, K): a linear classifier plus N(0, 0.5^2) logit noise."""
    w, b = params
    logits = x.reshape(x.shape[0], -1) @ w + b
    return logits + 0.5 * jax.random.normal(key, logits.shape)


def test_vote_robust_accuracy_at_least_certified_accuracy():
    w = 2.0 * jax.random.normal(jax.random.key(0), (64, K))
    x = jax.random.uniform(jax.random.key(1), (64, 8, 8, 1))
    params = (w, -jnp.mean(x.reshape(64, -1) @ w, axis=0))
    y = np.asarray(jnp.argmax(x.reshape(64, -1) @ w + params[1], axis=1))  # noiseless labels
    cert = smoothing.certify(noisy_linear, params, x, jax.random.key(2), num_classes=K,
                             sigma=SIGMA, n0=64, n=2000, alpha=ALPHA, batch_size=500)
    target = attacker.make_target(noisy_linear, stochastic=True, sigma=SIGMA)
    x_adv = attacker.run_attack("apgd-ce", target, params, x, y, jax.random.key(3), norm="l2",
                                  eps=RADIUS, n_iter=20, eot_iter=16)
    assert np.all(np.linalg.norm(np.asarray(x_adv - x).reshape(64, -1), axis=1) <= RADIUS + 1e-5)
    clean = score_vote(noisy_linear, params, x, y, jax.random.key(4), m=M, sigma=SIGMA)
    adv = score_vote(noisy_linear, params, x_adv, y, jax.random.key(4), m=M, sigma=SIGMA)
    certified = (cert.prediction == y) & (cert.radius > RADIUS)
    broken = certified & (adv["prediction"] != y)
    # Allowed: certificates wrong with prob <= alpha, plus M-pass votes that miss a class
    # whose probability at distance RADIUS is still >= q > 1/2 (fails only if count <= M/2).
    q = stats.norm.cdf(stats.norm.ppf(cert.pA_lower[certified]) - RADIUS / SIGMA)
    expected = ALPHA * certified.sum() + stats.binom.cdf(M // 2, M, q).sum()
    allowed = stats.poisson.ppf(1 - ALPHA, expected)
    assert 0 < certified.sum() and broken.sum() <= allowed
    assert adv["accuracy"] >= certified.mean() - allowed / len(y)
    assert adv["accuracy"] < clean["accuracy"]  # the attack has teeth on uncertified points


def test_vote_scoring_is_predict_of_the_same_smoothed_classifier():
    # One Monte Carlo vote count for the library: the 'vote' rule's votes, decisions
    # and abstentions are exactly PREDICT's on the same key.
    w = 2.0 * jax.random.normal(jax.random.key(0), (64, K))
    x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    params = (w, -jnp.mean(x.reshape(16, -1) @ w, axis=0))
    y = np.zeros(16, np.int32)
    vote = score_vote(noisy_linear, params, x, y, jax.random.key(4), m=M, sigma=SIGMA)
    pred = smoothing.predict(noisy_linear, params, x, jax.random.key(4), num_classes=K,
                             sigma=SIGMA, n=M, alpha=1e-3, batch_size=M)
    np.testing.assert_array_equal(np.where(vote["decided"], vote["prediction"], -1),
                                  pred.prediction)


def _reuse_problem():
    w = 2.0 * jax.random.normal(jax.random.key(0), (64, K))
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1))
    params = (w, -jnp.mean(x.reshape(8, -1) @ w, axis=0))
    batch = {"image": x, "label": jnp.argmax(x.reshape(8, -1) @ w + params[1], axis=1),
             "mask": np.ones(8, bool), "index": np.arange(8)}
    return params, batch


def _reuse_settings(attacks):
    return AttackSettings(eps=(0.05, 0.1), attacks=attacks, rules=("single", "vote"), n_iter=3,
                          eot_iter=2, vote_samples=8, repeats=2, max_examples=8, batch_size=8)


def _recorded(monkeypatch):
    """Patches the evaluator's attack runs; returns [(attack, eps, target sigma, done, x_adv)]."""
    calls, real = [], attacker.run_attack

    def recording(attack, target, *args, eps, done, **kwargs):
        out = real(attack, target, *args, eps=eps, done=done, **kwargs)
        calls.append((attack, eps, target.sigma, dict(done), out))
        return out
    monkeypatch.setattr(attacker, "run_attack", recording)
    return calls


@pytest.mark.parametrize("attacks", [("apgd-ce", "autoattack"), ("autoattack", "apgd-ce")])
def test_autoattack_reuses_the_batchs_apgd_runs(monkeypatch, attacks):
    # Each (eps, target) runs APGD-CE once, whatever the order the attacks are listed in:
    # the ensemble takes that very output (same eps, same target) rather than running it again.
    params, batch = _reuse_problem()
    calls = _recorded(monkeypatch)
    run = attacker.Attacker(noisy_linear, params, _reuse_settings(attacks), stochastic=True,
                            vote_sigma=SIGMA)
    records = list(run.run(batch))
    assert len(records) == 2 * (1 + 2 * 2)  # clean and every (attack, eps), per rule
    ce = {(eps, sigma): out for attack, eps, sigma, _, out in calls if attack == "apgd-ce"}
    aa = [(eps, sigma, done) for attack, eps, sigma, done, _ in calls if attack == "autoattack"]
    assert len(ce) == len(aa) == 4 and len(calls) == 8  # 2 eps x 2 targets, nothing twice
    for eps, sigma, done in aa:
        assert list(done) == ["apgd-ce"] and done["apgd-ce"] is ce[(eps, sigma)]


def test_autoattack_reuse_survives_a_resume(monkeypatch):
    # A run resumed after its APGD-CE units finished attacks with the same draws: its
    # AutoAttack records equal the uninterrupted run's.
    params, batch = _reuse_problem()
    make = lambda: attacker.Attacker(noisy_linear, params, _reuse_settings(("apgd-ce", "autoattack")),
                                     stochastic=True, vote_sigma=SIGMA)
    whole = list(make().run(batch))
    finished = {attacker.unit_key(r): r for r in whole if r["attack"] != "autoattack"}
    calls = _recorded(monkeypatch)
    resumed = list(make().run(batch, finished))
    assert resumed == whole
    assert [c[0] for c in calls] == ["apgd-ce", "autoattack"] * 4


def test_autoattack_of_another_version_runs_its_own_members(monkeypatch):
    # 'autoattack-standard' against a random target uses APGD's x_adv, the stand-alone run
    # returns x_best there: nothing is reused.
    params, batch = _reuse_problem()
    calls = _recorded(monkeypatch)
    run = attacker.Attacker(noisy_linear, params,
                            _reuse_settings(("apgd-ce", "autoattack-standard")),
                            stochastic=True, vote_sigma=SIGMA)
    list(run.run(batch))
    assert [done for attack, *_, done, _ in calls if attack != "apgd-ce"] == [{}] * 4
    target = attacker.make_target(noisy_linear, stochastic=True)
    assert attacker.reusable_members("autoattack-standard", target) == ()
    assert attacker.reusable_members("autoattack", target) == ("apgd-ce", "apgd-dlr")
    assert attacker.reusable_members("autoattack", attacker.make_target(
        noisy_linear, stochastic=False)) == ("apgd-ce",)
    assert attacker.reusable_members("apgd-ce", target) == ()
