"""The reproduction study: job planning, verdicts, and a smoke-sized study
whose RESULTS.md numbers are re-derived here from the runs' own logs."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from hycas_jax.evaluation import certify_paths
from hycas_jax.reporting import certify_report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import study  # noqa: E402
import study_report  # noqa: E402


def test_jobs_give_every_method_the_same_budget_and_the_right_sigmas():
    profile = study.PROFILES["mnist"]
    jobs = study.jobs(profile)
    assert {j.seed for j in jobs} == set(profile["seeds"]) and len(profile["seeds"]) >= 3
    by = {(j.method, j.train_sigma, j.seed): j for j in jobs}
    for seed in profile["seeds"]:
        for sigma in profile["sigmas"]:  # noise-trained main methods: one run per sigma
            for m in ("hycas", "hycas-budgeted", "rs"):
                assert by[(m, sigma, seed)].certify_sigmas == (sigma,)
        for m in ("lipschitz", "at"):  # noise-free: trained once, certified at every sigma
            assert by[(m, 0.0, seed)].certify_sigmas == profile["sigmas"]
        for m in ("abl-sncan", "abl-fdpan", "abl-rpfan", "abl-no-rani", "abl-no-gate"):
            assert by[(m, profile["sigmas"][0], seed)].attack is False
    configs = [study.method_config(profile, j) for j in jobs]
    budget = {(c.training.num_steps, c.training.batch_size, c.training.learning_rate,
               c.certify.n, c.certify.n0, c.certify.alpha, c.certify.max_examples)
              for c in configs}
    assert len(budget) == 1
    no_gate = study.method_config(profile, by[("abl-no-gate", 0.25, 0)])
    assert no_gate.model.gate == "uniform"
    assert study.method_config(profile, by[("at", 0.0, 0)]).training.adversarial.enabled


def test_bad_profile_and_method_names_are_rejected():
    with pytest.raises(ValueError, match="unknown profile"):
        study.check_profile("imagenet")
    with pytest.raises(ValueError, match="unknown method"):
        study.check_methods(["hycas", "ars"])


def test_verdicts():
    assert study_report.verdict((60.0, 1.0, 3), (50.0, 1.0, 3))[0] == "supports"
    assert study_report.verdict((50.0, 1.0, 3), (60.0, 1.0, 3))[0] == "contradicts"
    assert study_report.verdict((52.0, 5.0, 3), (50.0, 5.0, 3))[0] == "inconclusive"
    assert study_report.verdict((60.0, math.nan, 1), (50.0, 1.0, 3))[0].startswith("inconclusive")
    _, diff, se = study_report.verdict((60.0, 3.0, 3), (50.0, 4.0, 3))
    assert diff == 10.0 and se == pytest.approx(math.sqrt(9 / 3 + 16 / 3))


def test_the_paper_table_is_parsed_not_typed(tmp_path):
    text = ("intro\nMethod Dataset \\(r=0.0\\) \\(r=0.75\\)\nRS CIFAR-10 65.2 32.4\n"
            "Ours (HyCAS) ImageNet 69.2 45.6\nother text 1 2\n")
    (tmp_path / "paper.txt").write_text(text)
    radii, rows = study_report.paper_table(tmp_path / "paper.txt")
    assert radii == [0.0, 0.75]
    assert rows == [("RS", "CIFAR-10", ["65.2", "32.4"]),
                    ("Ours (HyCAS)", "ImageNet", ["69.2", "45.6"])]


@pytest.mark.slow  # about 3 minutes on 2 cores: compiles two models' train, certify and attacks
def test_smoke_study_report_regenerates_from_the_runs(tmp_path):
    root, out = tmp_path / "study", tmp_path / "results"
    study.run_study("smoke", root, methods=["hycas", "rs"], progress=False)
    path = study_report.write_report(root, out, reference=tmp_path / "no_reference")
    text = path.read_text()
    for name in ("RESULTS.md", "certified_sigma0.25.png", "robust_accuracy.png", "results.json"):
        assert (out / name).exists()
    # Certified accuracy at r = 0 of the RS baseline, re-scored from each seed's TSV.
    values = []
    for seed in study.PROFILES["smoke"]["seeds"]:
        log = certify_paths(root / "runs" / "rs" / "sigma0.25" / f"seed{seed}",
                                       0.25)["log"]
        rows = certify_report.read_log(log)
        assert len(rows["idx"]) == study.PROFILES["smoke"]["certify"]["max_examples"]
        values.append(100 * certify_report.certified_accuracy(
            rows["predict"], rows["label"], rows["radius"], (0.0,))[0])
    row = next(line for line in text.splitlines()
               if line.startswith("| RS baseline") and "| RS |" in line)
    assert row.split("|")[3].strip() == study_report.fmt(study_report.mean_sd(values))
    assert "HyCAS beats RS in certified accuracy" in text
    assert "paper's table was not found" in text
    per_seed = json.loads((out / "results.json").read_text())
    assert len(per_seed["hycas"]["train_sigma=0.25"]) == len(study.PROFILES["smoke"]["seeds"])
    # A second run finds every stage done and computes nothing.
    before = {p: p.stat().st_mtime for p in root.rglob("*.tsv")}
    study.run_study("smoke", root, methods=["hycas", "rs"], progress=False)
    assert {p: p.stat().st_mtime for p in root.rglob("*.tsv")} == before
    assert np.isfinite(study_report.mean_sd(values)[0])


def test_each_claim_gets_one_sentence_in_plain_words():
    words = study_report.plain_words
    assert words(["supports"] * 3, [4.0, 6.0, 5.0]).startswith("Yes: HyCAS is ahead in all 3")
    assert "by 5.0 points" in words(["supports"] * 3, [4.0, 6.0, 5.0])
    assert words(["contradicts"] * 2, [-10.0, -20.0]) == (
        "No: HyCAS is behind in all 2 comparisons, by 15.0 points on average.")
    assert words(["supports", "contradicts", "inconclusive"], [3.0, -4.0, 0.5]).startswith(
        "Mixed: HyCAS is ahead in 1, behind in 1 and within noise in 1 of 3")
    assert words(["supports", "inconclusive"], [3.0, 1.0]).startswith("Partly")
    assert words(["contradicts", "inconclusive"], [-3.0, 1.0]).startswith("No: HyCAS is behind in 1 of 2")
    assert words(["inconclusive", "inconclusive (fewer than 2 seeds)"], [1.0, 3.0]) == (
        "Undecided: all 2 comparisons are within noise (mean difference +2.0 points).")


def test_the_lipschitz_comparison_sets_like_against_like():
    """Each row compares one certificate with the same certificate (one classifier, failure
    probability alpha), never the better of two."""
    stat = {("hycas", 0.25): {"RS": 70.0, "margin": 10.0}, ("lipschitz", 0.25): {"RS": 50.0, "margin": 30.0},
            ("hycas", 0.5): {"RS": 60.0, "margin": 10.0}, ("lipschitz", 0.5): {"RS": 40.0, "margin": 30.0}}
    seen = []

    def cert_stat(data, method, sigma, cert, field, index=None):
        seen.append((method, sigma, cert))
        return (stat[(method, sigma)][cert], 1.0, 3)

    data = {"runs": {("hycas",): None, ("lipschitz",): None},
            "meta": {"settings": {"certify": {"max_examples": 100}}}}
    original = study_report.cert_stat, study_report._attack_settings
    study_report.cert_stat, study_report._attack_settings = cert_stat, lambda data: (None, 0)
    try:
        rows = study_report._claims(data, (0.25, 0.5))
    finally:
        study_report.cert_stat, study_report._attack_settings = original
    lip = [r for r in rows if "Lipschitz" in r[1]]
    assert lip and all("better" not in r[1] for r in lip)
    assert {("hycas", "lipschitz")} == {tuple(sorted({m for m, _, _ in seen}))}
    margin = [r for r in lip if "margin certificate" in r[1]]
    assert margin and all(r[4].startswith("contradicts") for r in margin)  # 10 vs 30
    assert all("sigma" not in r[1] for r in margin)  # once, not per sigma
    rs = [r for r in lip if "RS certificate" in r[1]]
    assert rs and all(r[4].startswith("supports") for r in rs)
