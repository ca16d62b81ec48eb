"""Tests for the certification log (hycas_jax.runtime.records) and hycas_jax.reporting.certify_report:
resumable TSV logs, certified accuracy, ACR, plots."""
from pathlib import Path

import numpy as np
import pytest

from hycas_jax.reporting import certify_report as report
from hycas_jax.runtime.records import RecordLog, certify_log

REFERENCE = (Path(__file__).resolve().parents[1] / "experiments" / "reference"
             / "cohen2019_cifar10_resnet110")
EXTRA = ("pA", "count")


def row(idx, predict=1, radius=0.5, label=1):
    return dict(idx=idx, label=label, predict=predict, radius=radius,
                correct=int(predict == label), time=0.25, pA=0.9, count=900)


def test_log_round_trips_radius_at_full_precision(tmp_path):
    log = certify_log(tmp_path / "log.tsv", EXTRA)
    radius = 0.1 + 0.2  # 0.30000000000000004: a short format would lose it
    log.append(row(0, radius=radius))
    log.append(row(7, predict=-1, radius=0.0))
    lines = (tmp_path / "log.tsv").read_text().splitlines()
    assert lines[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime\tpA\tcount"
    columns = report.read_log(tmp_path / "log.tsv")
    assert columns["radius"][0] == radius
    np.testing.assert_array_equal(columns["idx"], [0, 7])
    np.testing.assert_array_equal(columns["predict"], [1, -1])
    assert columns["count"].dtype == np.int64


def test_log_resumes_and_drops_a_truncated_last_line(tmp_path):
    path = tmp_path / "log.tsv"
    log = certify_log(path, EXTRA)
    for idx in range(3):
        log.append(row(idx))
    with open(path, "a") as f:
        f.write("3\t1\t1\t0.4")  # an interrupted write
    resumed = certify_log(path, EXTRA)
    assert set(resumed.records) == {0, 1, 2}
    resumed.append(row(3))
    np.testing.assert_array_equal(report.read_log(path)["idx"], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="2 is already in"):
        resumed.append(row(2))


def test_read_log_ignores_truncated_line_but_not_corrupt_rows(tmp_path):
    path = tmp_path / "log.tsv"
    certify_log(path).append({k: v for k, v in row(0).items() if k not in EXTRA})
    with open(path, "a") as f:
        f.write("1\t2")
    assert len(report.read_log(path)["idx"]) == 1
    with open(path, "a") as f:
        f.write("\n")  # now a complete but malformed row
    with pytest.raises(ValueError, match="line 3"):
        report.read_log(path)


def test_log_rejects_wrong_header_and_wrong_row(tmp_path):
    path = tmp_path / "log.tsv"
    certify_log(path, EXTRA)
    with pytest.raises(ValueError, match="columns"):
        certify_log(path, ("margin_radius",))
    with pytest.raises(ValueError, match="columns"):
        certify_log(path, EXTRA).append(dict(idx=0, label=1))


def test_certified_accuracy_and_acr_by_hand():
    prediction = np.array([1, 2, -1, 0, 3])
    label = np.array([1, 2, 1, 1, 3])
    radius = np.array([0.3, 1.0, 0.0, 2.0, 0.25])
    accuracy = report.certified_accuracy(prediction, label, radius, (0.0, 0.25, 0.5, 1.0, 1.5))
    np.testing.assert_allclose(accuracy, [0.6, 0.6, 0.2, 0.2, 0.0])
    assert report.average_certified_radius(prediction, label, radius) == pytest.approx(1.55 / 5)


def test_markdown_table_and_plot(tmp_path):
    rs = (np.array([1, 1, -1]), np.array([1, 0, 1]), np.array([0.6, 0.3, 0.0]))
    margin = (np.array([1, 1, 1]), np.array([1, 0, 1]), np.array([0.2, 0.1, 0.1]))
    table = report.markdown_table({"RS": rs, "margin": margin}, (0.0, 0.5))
    assert table.splitlines()[0] == "| certificate | r=0 | r=0.5 | ACR |"
    assert "| RS | 33.3 | 33.3 | 0.200 |" in table
    assert "| margin | 66.7 | 0.0 | 0.100 |" in table
    png = tmp_path / "curve.png"
    report.plot_certified_accuracy({"RS": rs, "margin": margin}, png, title="toy")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_log_curves_finds_margin_columns(tmp_path):
    path = tmp_path / "log.tsv"
    log = certify_log(path, ("margin_predict", "margin_radius"))
    log.append({**{k: v for k, v in row(0).items() if k not in EXTRA},
                "margin_predict": 1, "margin_radius": 0.125})
    curves = report.log_curves(report.read_log(path))
    assert set(curves) == {"RS", "margin"}
    assert curves["margin"][2][0] == 0.125


def test_reads_cohen_reference_logs():
    log = report.read_log(REFERENCE / "sigma_0.25.tsv")
    assert len(log["idx"]) == 500
    np.testing.assert_array_equal(log["correct"], log["predict"] == log["label"])
    accuracy = report.certified_accuracy(log["predict"], log["label"], log["radius"], (0.0, 0.5))
    np.testing.assert_allclose(accuracy, [0.748, 0.428])  # Cohen et al. report ~75% and ~43%
    # The sigma = 0.12 log writes time as H:MM:SS.ffffff.
    assert report.read_log(REFERENCE / "sigma_0.12.tsv")["time"][0] == pytest.approx(13.73608)


def test_json_lines_log_resumes_by_key_and_refuses_a_repeated_unit(tmp_path):
    path = tmp_path / "units.jsonl"
    key = lambda r: (r["attack"], r["eps"])  # noqa: E731
    log = RecordLog(path, key=key)
    log.append({"attack": "apgd-ce", "eps": 0.1, "correct": [1, 0]})
    with open(path, "a") as f:
        f.write('{"attack": "apgd-ce", "eps": 0.2, "corr')  # an interrupted write
    resumed = RecordLog(path, key=key)
    assert resumed.records == {("apgd-ce", 0.1): {"attack": "apgd-ce", "eps": 0.1,
                                                  "correct": [1, 0]}}
    assert ("apgd-ce", 0.1) in resumed and ("apgd-ce", 0.2) not in resumed
    with pytest.raises(ValueError, match="already in"):
        resumed.append({"attack": "apgd-ce", "eps": 0.1, "correct": [1, 1]})
    resumed.append({"attack": "apgd-ce", "eps": 0.2, "correct": [0, 0]})
    assert len(path.read_text().splitlines()) == 2
