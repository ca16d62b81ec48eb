"""The reproduction study: job planning, verdicts, and a smoke-sized study
whose RESULTS.md numbers are re-derived here from the runs' own logs."""
import dataclasses
import json
import math
import shutil
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
    late = {"hycas": 2 * study.PROFILES["smoke"]["steps"]}  # as if its curve plateaued later
    study.run_study("smoke", root, methods=["hycas", "rs"], progress=False, own_plateau=late)
    path = study_report.write_report(root, out, reference=tmp_path / "no_reference")
    text = path.read_text()
    # The late method at its own plateau: its own workdirs, table rows, claims and times.
    for seed in study.PROFILES["smoke"]["seeds"]:
        final = root / "runs" / "hycas" / f"steps{late['hycas']}" / "sigma0.25" / f"seed{seed}"
        assert json.loads((final / "config.json").read_text())["training"]["num_steps"] == late["hycas"]
    assert "## The late methods at their own plateau (sigma = 0.25)" in text
    assert f"| HyCAS (RANI per block) | {late['hycas']} | RS |" in text
    assert f"| HyCAS (RANI per block) | {study.PROFILES['smoke']['steps']} | RS |" in text
    assert "| HyCAS beats RS in certified accuracy, each at its own budget |" in text
    assert (f"HyCAS (RANI per block) ({late['hycas']} steps) vs RS baseline (plain CNN, noise "
            f"training) ({study.PROFILES['smoke']['steps']} steps), RS certificate") in text
    # Its row is its own runs' numbers: certified accuracy at r = 0, re-scored from each TSV.
    values = []
    for seed in study.PROFILES["smoke"]["seeds"]:
        log = certify_paths(root / "runs" / "hycas" / f"steps{late['hycas']}" / "sigma0.25"
                            / f"seed{seed}", 0.25)["log"]
        rows = certify_report.read_log(log)
        values.append(100 * certify_report.certified_accuracy(
            rows["predict"], rows["label"], rows["radius"], (0.0,))[0])
    row = next(line for line in text.splitlines()
               if line.startswith(f"| HyCAS (RANI per block) | {late['hycas']} | RS |"))
    assert row.split("|")[4].strip() == study_report.fmt(study_report.mean_sd(values))
    assert f"Runs finished: {3 * len(study.PROFILES['smoke']['seeds'])} of" in text
    assert f"| HyCAS (RANI per block), {late['hycas']} steps | 0.25 |" in text
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
    assert "| HyCAS beats RS in certified accuracy |" in text
    assert "paper's table was not found" in text
    per_seed = json.loads((out / "results.json").read_text())
    assert len(per_seed["hycas"]["train_sigma=0.25"]) == len(study.PROFILES["smoke"]["seeds"])
    assert len(per_seed["hycas"][f"train_sigma=0.25, {late['hycas']} steps"]) == len(
        study.PROFILES["smoke"]["seeds"])
    assert "In progress" not in text and ", in progress" not in text.splitlines()[0]
    # A study stopped part-way: the unfinished certification (no summary yet) and the missing
    # run are left out, and the report says how far it got and which phase runs now.
    partial = tmp_path / "partial"
    shutil.copytree(root, partial)
    certify_paths(partial / "runs" / "rs" / "sigma0.25" / "seed1", 0.25)["summary"].unlink()
    shutil.rmtree(partial / "runs" / "hycas" / f"steps{late['hycas']}" / "sigma0.25" / "seed1")
    parts = study.schedule(study.profile_from_json(json.dumps(
        json.loads((root / "study.json").read_text())["settings"])), ["hycas", "rs"])
    assert study_report.study_progress(root, json.loads((root / "study.json").read_text())) == (
        len(parts), len(parts), None)
    text = study_report.write_report(partial, tmp_path / "partial_results",
                                     reference=tmp_path / "no_reference").read_text()
    assert text.splitlines()[0].endswith(", in progress")
    assert (f"**In progress**: {len(parts) - 2} of {len(parts)} parts of the study finished; "
            f"now running the phase '{study.PHASES[0]}'") in text
    row = next(line for line in text.splitlines()
               if line.startswith("| RS baseline") and "| RS |" in line)
    assert row.split("|")[3].strip().endswith("(1)")
    assert f"Runs finished: {3 * len(study.PROFILES['smoke']['seeds']) - 1} of" in text
    # A second run finds every stage done and computes nothing.
    before = {p: p.stat().st_mtime for p in root.rglob("*.tsv")}
    study.run_study("smoke", root, methods=["hycas", "rs"], progress=False, own_plateau=late)
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


def _points(method, values):
    return [{"method": method, "steps": s, "clean": v, "noisy": v, "RS r=0.25": v, "RS r=0.5": v,
             "margin r=0.25": v, "margin r=0.5": v, "timings": {}}
            for s, v in zip((100, 200, 400, 800), values)]


def test_the_shared_budget_is_where_every_curve_has_flattened():
    import curves
    flat_early = _points("rs", [80.0, 90.0, 90.5, 90.7])     # 200 -> 400 gains 0.5: plateau at 200
    flat_late = _points("hycas", [50.0, 70.0, 85.0, 85.9])   # 400 -> 800 gains 0.9: plateau at 400
    assert curves.plateau(flat_early, ("clean",)) == 200
    assert curves.plateau(flat_late, curves.CURVE_METRICS["hycas"]) == 400
    budget = curves.choose_budget({"rs": flat_early, "hycas": flat_late})
    assert budget.steps == 400 and budget.per_method == {"rs": 200, "hycas": 400}
    assert budget.sentence().startswith("Shared budget: 400 steps")
    assert curves.plateau(flat_late[:3], curves.CURVE_METRICS["hycas"]) is None  # 800 not seen
    # A curve still rising at the largest budget: no shared budget, and it is named.
    rising = _points("at", [50.0, 60.0, 70.0, 80.0])
    budget = curves.choose_budget({"rs": flat_early, "at": rising})
    assert budget.steps is None and budget.per_method["at"] is None
    assert "No shared budget: at still gained" in budget.sentence()
    assert budget.largest == 800 and budget.last_gain == {"at": ("clean", 10.0)}
    assert "(at +10.0 points of clean)" in budget.sentence()
    assert budget.sentence().endswith("for the largest budget tried, 800 steps.")
    assert budget.study_steps == 800
    # The profile's cap binds: every method trains for it, and those still rising are named.
    capped = curves.choose_budget({"rs": flat_early, "at": rising}, cap=400)
    assert capped.study_steps == 400 and capped.per_method == budget.per_method
    words = capped.sentence()
    assert "capped at 400 steps" in words and "rs had plateaued by then; at had not" in words
    assert "every method for the largest budget tried" not in words
    # The one still rising also trains for its last budget (it has no plateau to go to).
    assert capped.own_plateaus() == {"at": 800} and budget.own_plateaus() == {}
    assert words.endswith("The study also trains at for 800 steps (the largest budget tried) "
                          "on every seed and certifies it at the first sigma.")
    # No curve at all: nothing to cap (reproduce.py falls back to the profile's largest budget).
    assert curves.choose_budget({}, cap=400).study_steps == 0
    # A cap above the budget changes nothing.
    assert curves.choose_budget({"rs": flat_early, "at": rising}, cap=1600).sentence() == budget.sentence()
    shared = curves.choose_budget({"rs": flat_early, "hycas": flat_late}, cap=200)
    assert shared.study_steps == 200 and "rs had plateaued by then; hycas had not" in shared.sentence()
    assert shared.own_plateaus() == {"hycas": 400} and "hycas for 400 steps (its plateau)" in shared.sentence()
    # One metric still rising keeps the method from its plateau.
    mixed = _points("lipschitz", [80.0, 90.0, 90.5, 90.6])
    for p, v in zip(mixed, (10.0, 20.0, 30.0, 30.2)):
        p["margin r=0.5"] = v
    assert curves.plateau(mixed, curves.CURVE_METRICS["lipschitz"]) == 400


def test_the_schedule_runs_every_stage_once_the_main_question_first():
    profile = dict(study.PROFILES["mnist"], own_plateau={"hycas": 12800})
    parts = study.schedule(profile)
    first = profile["sigmas"][0]
    # Every job's every stage exactly once.
    stages = [(p.job, s) for p in parts for s in p.certify_sigmas] + [(p.job, "attack")
                                                                      for p in parts if p.attack]
    assert len(stages) == len(set(stages))
    assert set(stages) == {(j, s) for j in study.jobs(profile) for s in j.certify_sigmas} | {
        (j, "attack") for j in study.jobs(profile) if j.attack}
    # Phases in order; the first certifies every main method at the first sigma, every seed.
    order = [study.PHASES.index(p.phase) for p in parts]
    assert order == sorted(order) and set(order) == {0, 1, 2, 3, 4}
    head = [p for p in parts if p.phase == study.PHASES[0]]
    assert {(p.job.method, p.job.seed) for p in head} == {
        (m, s) for m in study.MAIN for s in profile["seeds"]}
    assert all(p.certify_sigmas == (first,) and not p.attack for p in head)
    assert [p.job.seed for p in head] == sorted(p.job.seed for p in head)  # seed by seed
    assert all(study.METHODS[p.job.method].ablation == (p.phase == study.PHASES[3]) for p in parts)
    # The other sigmas come last: the ablations the question asks for run before them.
    assert all((p.phase == study.PHASES[4]) == (first not in p.certify_sigmas and not p.attack
                                                 and not study.METHODS[p.job.method].ablation)
               for p in parts)
    # Right after it: the late method trained to its own plateau, every seed, the first sigma
    # only, in a workdir of its own.
    late = [p for p in parts if p.phase == study.PHASES[1]]
    assert [(p.job.method, p.job.steps, p.job.seed) for p in late] == [
        ("hycas", 12800, s) for s in profile["seeds"]]
    assert all(p.certify_sigmas == (first,) and not p.attack for p in late)
    assert all(p.job.steps is None for p in parts if p.phase != study.PHASES[1])
    job = late[0].job
    assert job.workdir("r") != dataclasses.replace(job, steps=None).workdir("r")
    assert study.method_config(profile, job).training.num_steps == 12800
    assert study.method_config(profile, head[0].job).training.num_steps == profile["steps"]
    # Ablations are certified by RS alone; every main method by both certificates.
    assert all(study.method_config(profile, p.job).certify.margin
               != study.METHODS[p.job.method].ablation for p in parts)


def test_a_curve_stops_at_its_plateau_and_the_others_go_on(tmp_path, monkeypatch):
    """run_curves trains no budget past a method's plateau (scores stand in for training:
    this checks which points are scheduled, not what they measure)."""
    import curves
    values = {"rs": [80.0, 90.0, 90.5, 90.7], "hycas": [50.0, 70.0, 85.0, 95.0]}
    profile = {"curves": {"budgets": (100, 200, 400, 800)}}
    ran = []

    def fake_point(profile, method, steps, root):
        ran.append((method, steps))
        point = _points(method, values[method])[curves.budgets(profile).index(steps)]
        path = curves.point_dir(root, method, steps) / "point.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(point))
        return point
    monkeypatch.setattr(curves, "run_point", fake_point)
    out = curves.run_curves(profile, tmp_path, ["rs", "hycas"], progress=False)
    assert ran == [("rs", 100), ("hycas", 100), ("rs", 200), ("hycas", 200), ("rs", 400),
                   ("hycas", 400), ("hycas", 800)]  # rs flat from 200 (seen at 400): no 800 for it
    assert [p["steps"] for p in out["rs"]] == [100, 200, 400]
    assert curves.choose_budget(out).per_method == {"rs": 200, "hycas": None}
    # Resuming schedules nothing new.
    ran.clear()
    assert curves.run_curves(profile, tmp_path, ["rs", "hycas"], progress=False) == out
    assert ran == []


def test_curve_points_train_the_studys_model_at_each_budget_on_the_kept_data():
    import curves
    profile = study.PROFILES["mnist"]
    a = curves.curve_config(profile, "hycas-budgeted", 400)
    b = curves.curve_config(profile, "hycas-budgeted", 1600)
    assert (a.training.num_steps, b.training.num_steps) == (400, 1600)
    assert a.dataset.holdout == b.dataset.holdout == profile["curves"]["holdout"] > 0
    assert a.model.to_dict() == b.model.to_dict()  # the same model at every budget
    assert a.model.conv == "aol" and a.model.rani == "final" and a.certify.margin_clip == "calibrated"
    assert a.training.sigma == profile["sigmas"][0]
    lip = curves.curve_config(profile, "lipschitz", 400)
    assert lip.training.sigma == 0.0 and lip.training.loss == "lipschitz_margin"
    assert set(curves.curve_methods(study.MAIN)) == set(curves.CURVE_METRICS)


@pytest.mark.slow  # trains 2 tiny models at 2 budgets and certifies them on held-out digits
def test_smoke_curves_score_every_point_on_the_holdout_split(tmp_path):
    import curves
    profile = study.PROFILES["smoke"]
    out = curves.run_curves(profile, tmp_path, ["rs", "lipschitz"], progress=False)
    assert [p["steps"] for p in out["rs"]] == list(curves.budgets(profile))
    for points in out.values():
        for p in points:
            assert p["images"] == profile["curves"]["certify"]["max_examples"]
            assert 0 <= p["clean"] <= 100 and 0 <= p["RS r=0.5"] <= p["RS r=0.25"] <= 100
    summary = json.loads((curves.point_dir(tmp_path, "rs", 2) / "certify_sigma0.25_summary.json").read_text())
    assert summary["settings"]["split"] == "holdout"
    assert curves.load_curves(tmp_path, ["rs", "lipschitz"]) == out
    curves.plot_curves(out, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| RS baseline" in curves.curve_table(out)


def test_a_grid_point_that_is_the_curve_run_reuses_its_scores(tmp_path):
    """The grid point with the method's own values at the curve's budget is the curve run;
    its scores are read, not recomputed (a training run would not give 12.5 everywhere)."""
    import curves
    import tuning
    profile = study.PROFILES["mnist"]
    steps = 800
    curve = dict(_points("rs", [12.5])[0], steps=steps)
    run = curves.point_dir(tmp_path, "rs", steps)
    run.mkdir(parents=True)
    (run / "point.json").write_text(json.dumps(curve))
    saved = curves.curve_config(profile, "rs", steps).to_json_best_effort(sort_keys=True)
    (run / "config.json").write_text(saved)  # as training saves it
    own = {"learning_rate": profile["learning_rate"]}
    assert own in tuning.grid(profile, "rs")
    point = tuning.run_point(profile, "rs", steps, own, tmp_path)
    assert point["clean"] == 12.5 and point["hyper"] == own
    assert point["same_run_as"] == "curves/rs/steps800"
    assert tuning.load_tuning(tmp_path, ["rs"], steps) == {"rs": [point]}
    # Another learning rate is another run: not reusable.
    assert not tuning._reusable(profile, "rs", steps, {"learning_rate": 1e-3}, tmp_path)
    assert tuning._reusable(profile, "rs", steps, own, tmp_path)
    # Saved with another checkpoint cadence (an older run), it computed the same thing.
    (run / "config.json").write_text(saved.replace('"checkpoint_every": 800', '"checkpoint_every": 400'))
    assert tuning._reusable(profile, "rs", steps, own, tmp_path)
    # A curve run trained with another config (say, before the profile changed) is not it.
    (run / "config.json").write_text(saved.replace('"num_steps": 800', '"num_steps": 801'))
    assert not tuning._reusable(profile, "rs", steps, own, tmp_path)


def test_every_method_is_tuned_on_the_same_grid_and_the_best_held_out_score_wins():
    import tuning
    profile = study.PROFILES["mnist"]
    lrs, temps = profile["tuning"]["learning_rates"], profile["tuning"]["temperatures"]
    assert len(tuning.grid(profile, "rs")) == len(lrs)  # a plain CNN has no temperature
    assert len(tuning.grid(profile, "hycas")) == len(tuning.grid(profile, "lipschitz")) == len(lrs) * len(temps)
    assert {h["learning_rate"] for h in tuning.grid(profile, "at")} == set(lrs)
    c = tuning.apply(study.method_config(profile, study.jobs(profile, ["hycas"])[0]),
                     {"learning_rate": 1e-3, "logit_temperature": 4.0})
    assert (c.training.learning_rate, c.training.logit_temperature) == (1e-3, 4.0)
    points = [dict(_points("rs", [v])[0], hyper={"learning_rate": lr})
              for lr, v in ((1e-3, 80.0), (3e-3, 90.0))]
    assert tuning.winners({"rs": points}) == {"rs": {"learning_rate": 3e-3}}
    table = tuning.tuning_table({"rs": points})
    assert "| RS baseline (plain CNN, noise training) | 0.003 | - | 90.0 | 90.0 | yes |" in table
    # The study trains each method with its winner.
    tuned = dict(profile, hyper={"hycas": {"learning_rate": 1e-3, "logit_temperature": 4.0}})
    job = study.jobs(tuned, ["hycas", "rs"])
    cfg = {j.method: study.method_config(tuned, j) for j in job}
    assert cfg["hycas"].training.learning_rate == 1e-3 and cfg["hycas"].training.logit_temperature == 4.0
    assert cfg["rs"].training.learning_rate == profile["learning_rate"]


def test_compute_time_is_reported_per_stage():
    data = {"runs": {("rs", 0.25): [{"timings": [{"train_s": 120.0, "certify_sigma0.25_s": 60.0,
                                                  "device": "CPU (2 cores)"}]},
                                     {"timings": [{"train_s": 240.0, "device": "NVIDIA H200"},
                                                  {"attack_s": 30.0}]}]}}
    table = study_report.stage_times(data)
    assert "| method | training sigma | runs | train | attack | certify sigma0.25 | device |" in table
    assert ("| RS baseline (plain CNN, noise training) | 0.25 | 2 | 3.0 | 0.5 | 1.0 | "
            "CPU (2 cores), NVIDIA H200, not recorded |") in table
    assert study_report._total_seconds(data) == 450.0
    assert study.device_name()  # this machine's, e.g. "CPU (2 cores)"


def test_a_report_before_the_study_has_started_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no study in .* yet"):
        study_report.write_report(tmp_path, tmp_path / "out")


def test_a_study_with_no_finished_run_says_so_instead_of_empty_tables(tmp_path):
    profile = study.PROFILES["smoke"]
    todo = study.jobs(profile, ("hycas", "rs"))
    (tmp_path / "study.json").write_text(json.dumps(study.study_meta("smoke", profile, todo, [])))
    out = tmp_path / "results"
    text = study_report.write_report(tmp_path, out, reference=tmp_path / "none").read_text()
    assert text.splitlines()[0].endswith(", in progress")
    assert f"Runs finished: 0 of {len(todo)} jobs" in text
    assert "**In progress**: 0 of" in text
    for line in ("No run has finished training yet.", "No certification at sigma 0.25 has "
                 "finished yet.", "No attack results yet.", "No comparison yet"):
        assert line in text
    assert "![" not in text and not list(out.glob("*.png"))  # no empty figure, no dead link
    assert "Every comparison" not in text


def test_a_report_of_an_unfinished_curve_stage_says_how_far_it_got(tmp_path):
    import curves
    for method, values in (("rs", [80.0, 90.0]), ("hycas", [50.0, 70.0])):
        for p in _points(method, values):
            p["steps"] *= 2  # the mnist profile's budgets: 200, 400, ...
            d = curves.point_dir(tmp_path, method, p["steps"])
            d.mkdir(parents=True)
            (d / "point.json").write_text(json.dumps(p))
    path = study_report.write_progress_report(tmp_path, tmp_path / "out", "mnist")
    text = path.read_text()
    budgets = curves.budgets(study.PROFILES["mnist"])
    left = 3 * len(budgets) + 2 * (len(budgets) - 2)  # 3 methods not started, 2 at 2 budgets
    assert "in progress" in text and f"4 points scored, at most {left} still to run" in text
    assert "tuning: no grid point finished yet" in text and "has not started, so there are no verdicts" in text
    assert "So far, no shared budget" in text and "| RS baseline" in text
    assert (tmp_path / "out" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_the_ablations_margin_note_gives_the_radius_their_bounds_allow():
    """Ablations skip the margin certificate; the report says what radius it could have
    reached (sqrt(2) x clip / L) and flags a method whose bound would let it reach r = 0.25."""
    settings = dict(study.PROFILES["mnist"], steps=6400)
    data = {"meta": {"settings": settings},
            "runs": {("abl-sncan", 0.25): [{"final": {"lipschitz_bound": 300.0}},
                                           {"final": {"lipschitz_bound": 400.0}}],
                     ("abl-fdpan", 0.25): [{"final": {"lipschitz_bound": 20.0}}]}}
    note = study_report._ablation_margin_note(data, ["abl-sncan"], 0.25)
    assert f"L >= 300.0, radius <= {math.sqrt(2) * 10.0 / 300:.3f}" in note
    assert note.endswith("below r = 0.25, the smallest nonzero radius reported.")
    note = study_report._ablation_margin_note(data, ["abl-sncan", "abl-fdpan"], 0.25)
    assert "For HyCAS, FDPAN stream only that reaches r = 0.25" in note
    assert "not known yet" in study_report._ablation_margin_note(data, ["abl-rpfan"], 0.25)
