"""certify_workdir and certify.py on one tiny trained workdir.

Every run uses the same (n0, n, batch_size) and margin_samples = n, so the
whole file compiles the Monte Carlo passes once (see hycas_jax.logits_fn_for).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hycas_jax
from hycas_jax import data, training
from hycas_jax.certification import clip, margin, smoothing
from hycas_jax.config import data_kwargs, experiment
from hycas_jax.evaluation import CertifySettings, certifier, certify_workdir
from hycas_jax.reporting import certify_report
from hycas_jax.runtime import checkpointing, records

ROOT = Path(__file__).resolve().parent.parent
N0, N, BATCH = 16, 64, 32
FAST = dict(n0=N0, n=N, batch_size=BATCH, margin_samples=N)
# Columns whose values are timings, so they differ between otherwise identical runs.
TIMES = ("time", "margin_time")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A one-block HyCAS model (RANI, random projections) trained for 2 steps."""
    c = experiment("digits8x8", kind="hycas", sigma=0.25)
    c.model.widths, c.model.strides = (4,), (2,)
    c.model.streams = (("sncan", "fdpan", "rpfan"),)
    c.training.batch_size, c.training.num_steps, c.training.warmup_steps = 32, 2, 1
    c.training.log_every = c.training.checkpoint_every = 2
    path = tmp_path_factory.mktemp("tiny")
    training.train(c, str(path), progress=False)
    return path


@pytest.fixture(scope="module")
def fresh8(workdir, tmp_path_factory):
    """The log of one uninterrupted run over images 0-7."""
    out = tmp_path_factory.mktemp("fresh8")
    _certify(workdir, out_dir=out, max_examples=8, **FAST)
    return certify_report.read_log(out / "certify_sigma0.25.tsv")


def _certify(workdir, out_dir=None, **settings):
    """certify_workdir with the workdir config's settings and `settings` over them."""
    return certify_workdir(workdir, CertifySettings.of_workdir(workdir, **settings),
                           out_dir=out_dir, progress=False)


def _log(out):
    return certify_report.read_log(Path(out) / "certify_sigma0.25.tsv")


def _assert_same_results(log, reference, rows):
    for name in reference:
        if name not in TIMES:
            np.testing.assert_array_equal(log[name], reference[name][rows], err_msg=name)


def test_end_to_end(workdir, tmp_path):
    summary = _certify(workdir, out_dir=tmp_path, max_examples=3, **FAST)
    log = _log(tmp_path)
    assert tuple(log) == (records.COHEN_COLUMNS + certifier.RS_COLUMNS
                          + certifier.MARGIN_COLUMNS)
    np.testing.assert_array_equal(log["idx"], [0, 1, 2])
    source, _ = data.get_source("digits8x8", "test")
    np.testing.assert_array_equal(log["label"], [source[i]["label"] for i in range(3)])
    np.testing.assert_array_equal(log["correct"], log["predict"] == log["label"])
    assert np.all(log["count"] <= N) and np.all((log["pA"] >= 0) & (log["pA"] <= 1))
    assert np.all(log["radius"] >= 0) and np.all(log["margin_radius"] >= 0)
    # The margin radius is the margin lower bound over sqrt(2) L, when it certifies.
    certified = log["margin_predict"] >= 0
    L = summary["settings"]["lipschitz"]
    np.testing.assert_allclose(log["margin_radius"][certified],
                               log["margin_lower"][certified] / (np.sqrt(2) * L))
    assert np.all(log["margin_lower"][~certified] <= 0)

    assert summary["num_images"] == 3 and set(summary["certificates"]) >= {"RS", "margin"}
    assert margin.smoothed_classifier(0.25) in summary["table"]
    assert f"L = {L:.6g}" in summary["table"] and "abstain" in summary["table"]
    assert json.loads((tmp_path / "certify_sigma0.25_summary.json").read_text()) == summary
    assert (tmp_path / "certify_sigma0.25.png").read_bytes()[:4] == b"\x89PNG"


def test_row_is_cohen_certify_with_the_image_key(workdir, fresh8):
    """Row idx = smoothing.certify of that image alone with fold_in(key(seed), idx)."""
    model, _, _ = training.restore_model(str(workdir))
    logits_fn, params = hycas_jax.functional(model)
    image = next(iter(data.eval_batches("digits8x8", batch_size=8)))["image"][5:6]
    rs_key, _ = jax.random.split(jax.random.fold_in(jax.random.key(0), 5))
    result = smoothing.certify(logits_fn, params, image, rs_key,
                               num_classes=10, sigma=0.25, n0=N0, n=N, alpha=1e-3,
                               batch_size=BATCH)
    assert result.radius[0] == fresh8["radius"][5]
    assert result.pA_lower[0] == fresh8["pA"][5]


def test_skip_takes_every_skip_th_image(workdir, tmp_path, fresh8):
    _certify(workdir, out_dir=tmp_path, skip=3, max_examples=3, **FAST)
    log = _log(tmp_path)
    np.testing.assert_array_equal(log["idx"], [0, 3, 6])
    _assert_same_results(log, fresh8, [0, 3, 6])


def test_resume_appends_and_matches_an_uninterrupted_run(workdir, tmp_path, fresh8):
    _certify(workdir, out_dir=tmp_path, max_examples=4, **FAST)
    path = tmp_path / "certify_sigma0.25.tsv"
    first = path.read_text()
    _certify(workdir, out_dir=tmp_path, max_examples=8, **FAST)
    assert path.read_text().startswith(first)
    log = _log(tmp_path)
    np.testing.assert_array_equal(log["idx"], np.arange(8))
    _assert_same_results(log, fresh8, np.arange(8))


class _Crash(Exception):
    pass


def test_interrupted_run_resumes_without_repeats(workdir, tmp_path, fresh8, monkeypatch):
    certify = smoothing.certify
    calls = []

    def crash_on_third_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise _Crash
        return certify(*args, **kwargs)

    monkeypatch.setattr(smoothing, "certify", crash_on_third_image)
    with pytest.raises(_Crash):
        _certify(workdir, out_dir=tmp_path, max_examples=6, **FAST)
    monkeypatch.undo()
    path = tmp_path / "certify_sigma0.25.tsv"
    assert len(path.read_text().splitlines()) == 3  # header + 2 images
    with open(path, "a") as f:  # and a row cut short by a kill mid-write
        f.write("2\t3\t-1\t0.0")
    _certify(workdir, out_dir=tmp_path, max_examples=6, **FAST)
    log = _log(tmp_path)
    np.testing.assert_array_equal(log["idx"], np.arange(6))
    _assert_same_results(log, fresh8, np.arange(6))


def test_resuming_with_other_settings_is_refused(workdir, tmp_path):
    _certify(workdir, out_dir=tmp_path, max_examples=1, **FAST)
    before = (tmp_path / "certify_sigma0.25.tsv").read_bytes()
    with pytest.raises(ValueError, match=r"n: 64 -> 128"):
        _certify(workdir, out_dir=tmp_path, max_examples=2, **dict(FAST, n=2 * N))
    with pytest.raises(ValueError, match=r"lowpass_form: 'einsum' -> 'kron'"):
        _certify(workdir, out_dir=tmp_path, max_examples=2, lowpass_form="kron", **FAST)
    assert (tmp_path / "certify_sigma0.25.tsv").read_bytes() == before


@pytest.mark.parametrize("setting, value, message", [
    ("sigma", 0.0, "sigma must be finite and > 0"),
    ("sigma", -1.0, "sigma must be finite and > 0"),
    ("alpha", 1.0, r"alpha must be in \(0, 1\)"),
    ("alpha", 0.0, r"alpha must be in \(0, 1\)"),
    ("n0", 0, "n0 must be in"),
    ("n", 0, "n must be in"),
    ("batch_size", 0, "batch_size must be in"),
    ("lowpass_form", "fft", "unknown low-pass form 'fft'"),
    ("margin_bound", "chernoff", "unknown margin bound 'chernoff'"),
    ("margin_clip", "per_image", "unknown margin_clip 'per_image'"),
])
def test_bad_settings_are_named(workdir, tmp_path, setting, value, message):
    with pytest.raises(ValueError, match=message):
        _certify(workdir, out_dir=tmp_path, **dict(FAST, **{setting: value}))
    assert not list(tmp_path.iterdir())


def test_calibrated_clip_is_measured_on_training_images_and_named(workdir, tmp_path):
    summary = _certify(workdir, out_dir=tmp_path, max_examples=2, margin_clip="calibrated",
                       **FAST)
    b = summary["settings"]["logit_bound"]
    assert summary["settings"]["margin_clip"] == "calibrated" and b % 0.5 == 0
    # b is 1.1 x the largest |logit| of n0 draws on the first 50 training images, rounded up.
    model, config, _ = training.restore_model(str(workdir))
    batch = next(iter(data.eval_batches("digits8x8", "train", batch_size=50, skip=0,
                                        max_examples=50, process_index=0, process_count=1,
                                        **data_kwargs(config))))
    logits_fn, params = hycas_jax.functional(hycas_jax.freeze(model))
    largest = float(clip._max_abs_logit(logits_fn, params, jnp.asarray(batch["image"]),
                                        jax.random.key(1), num=N0, chunk_size=N0))
    assert b - 0.5 < 1.1 * largest <= b
    assert f"-{b!r}, {b!r}" in summary["table"] and "empirical Bernstein" in summary["table"]
    # Rerunning recalibrates to the same b, so the log resumes.
    _certify(workdir, out_dir=tmp_path, max_examples=3, margin_clip="calibrated", **FAST)
    assert len(_log(tmp_path)["idx"]) == 3


def test_another_low_pass_form_certifies_alike(workdir, tmp_path, fresh8):
    summary = _certify(workdir, out_dir=tmp_path, max_examples=3, lowpass_form="kron", **FAST)
    assert summary["settings"]["lowpass_form"] == "kron"
    log = _log(tmp_path)
    # The same map up to float32 rounding, the same noise: the same certificates, up to a
    # rare sample whose top two logits are closer than the rounding.
    np.testing.assert_array_equal(log["predict"], fresh8["predict"][:3])
    np.testing.assert_allclose(log["count"], fresh8["count"][:3], atol=2)
    np.testing.assert_allclose(log["radius"], fresh8["radius"][:3], atol=0.01)


def test_data_that_does_not_match_the_model_is_refused(workdir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    config = json.loads((copy / checkpointing.CONFIG_FILE).read_text())
    config["dataset"]["name"] = "mnist5k"  # 28x28 images for an 8x8 model
    (copy / checkpointing.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="images have shape"):
        _certify(copy, **FAST)
    assert not list(copy.glob("certify_*"))


def _cli(*args, env=None):
    cmd = [sys.executable, str(ROOT / "certify.py"), "--progress=false", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", **(env or {})))


@pytest.mark.subprocess
def test_cli_on_four_devices_gives_the_one_device_rows(workdir, tmp_path, fresh8):
    proc = _cli("--workdir", workdir, "--out_dir", tmp_path, "--max", 3, "--n0", N0, "--n", N,
                "--batch_size", BATCH, "--margin_samples", N,
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert proc.returncode == 0, proc.stderr
    log = _log(tmp_path)
    for name in ("idx", "label", "predict", "radius", "correct", "pA", "count", "margin_predict"):
        np.testing.assert_array_equal(log[name], fresh8[name][:3], err_msg=name)
    # Logit sums are float32: summed in another order across devices.
    np.testing.assert_allclose(log["margin_lower"], fresh8["margin_lower"][:3], rtol=1e-5, atol=1e-6)


@pytest.mark.subprocess
def test_cli_certifies(workdir, tmp_path):
    proc = _cli("--workdir", workdir, "--out_dir", tmp_path, "--max", 2, "--n0", N0, "--n", N,
                "--batch_size", BATCH, "--no-margin")
    assert proc.returncode == 0, proc.stderr
    assert f"| RS: {margin.smoothed_classifier(0.25)} |" in proc.stdout
    assert tuple(_log(tmp_path)) == records.COHEN_COLUMNS + certifier.RS_COLUMNS


@pytest.mark.subprocess
def test_cli_rerun_reads_every_program_from_its_compilation_cache(workdir, tmp_path):
    cache = tmp_path / "xla"
    args = ("--workdir", workdir, "--max", 1, "--n0", N0, "--n", N, "--batch_size", BATCH,
            "--no-margin", f"--compilation_cache={cache}")
    first = _cli(*args, "--out_dir", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    entries = sorted(os.listdir(cache))
    assert entries, "the first run cached nothing"
    second = _cli(*args, "--out_dir", tmp_path / "b")
    assert second.returncode == 0, second.stderr
    assert sorted(os.listdir(cache)) == entries, "the rerun compiled a program anew"
    _assert_same_results(_log(tmp_path / "b"), _log(tmp_path / "a"), slice(None))
