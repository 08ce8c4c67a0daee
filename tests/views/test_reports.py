"""The experiment report: what it gathers from the store, the statistics, the page and its size.

The sample experiment (``sample_experiment.py``) holds real records and TensorBoard event files;
the browser tests (``tests/e2e/test_report_browser.py``) check that the page draws them.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import re
from pathlib import Path

import pytest
from sample_experiment import METRIC, SPEC, write_logs, write_sample

from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.search.ranking import kendall_tau
from kfnas.spaces import get_space
from kfnas.spaces.base import decision_values, dna_spec
from kfnas.store import ExperimentLayout, LocalStore, open_experiment
from kfnas.views.curves import CurvesError, read_curves
from kfnas.views.report import render_experiment, write_report
from kfnas.views.report_data import StudyData, TrialData, importance, page_data, to_json
from kfnas.views.rows import describe_result, trial_row


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def report(sample):
    return render_experiment(open_experiment(sample.uri))


def study(report, name):
    return next(s for s in report.data["studies"] if s["name"] == name)


def page_json(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="kfnas-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def test_every_study_of_the_chain_in_order_with_counts(report):
    assert [s["name"] for s in report.data["studies"]] == ["proxy", "validation", "final"]
    proxy = study(report, "proxy")
    assert proxy["counts"] == {"COMPLETED": 10, "FAILED": 1, "INFEASIBLE": 0, "PENDING": 1}
    assert proxy["space"] == "mnasnet" and proxy["searched"]
    assert study(report, "validation")["space"] == "mnasnet"  # from its trials
    assert not study(report, "validation")["searched"]
    assert study(report, "validation")["importance"] == []


def test_trials_carry_their_decisions_as_the_space_names_them(sample, report):
    proxy = study(report, "proxy")
    spec = sample.records.read_spec("proxy", 5)
    expected = decision_values(get_space("mnasnet"), spec.dna_json)
    names = [d["id"] for d in proxy["decisions"]]
    assert names == list(expected) and "blocks[0].kernel_size" in names
    row = next(t for t in proxy["trials"] if t["trial_id"] == 5)
    decoded = {d["id"]: d["choices"][i] for d, i in zip(proxy["decisions"], row["d"], strict=True)}
    assert decoded == {k: str(v) for k, v in expected.items()}


def test_pareto_fronts_are_the_non_dominated_trials(report):
    proxy = study(report, "proxy")
    done = [t for t in proxy["trials"] if t["status"] == "COMPLETED"]
    for cost in ("latency_ms", "flops"):
        expected = [
            t["trial_id"]
            for t in done
            if not any(
                o["value"] >= t["value"]
                and o[cost] <= t[cost]
                and (o["value"], o[cost]) != (t["value"], t[cost])
                for o in done
            )
        ]
        assert proxy["fronts"][cost] == sorted(expected) and expected


def test_proxy_against_full_training_pairs_and_kendall_tau(sample, report):
    pairs = report.data["pairs"]
    assert len(pairs) == 3
    for pair in pairs:
        validation = sample.records.read_result("validation", pair["trial"])
        proxy = sample.records.read_result("proxy", pair["proxy_trial"])
        assert (pair["proxy"], pair["full"]) == (proxy.metrics[METRIC], validation.metrics[METRIC])
    tau = kendall_tau([p["proxy"] for p in pairs], [p["full"] for p in pairs])
    assert report.kendall_tau == tau and f"Kendall tau = {tau:.3f} over 3" in report.markdown


def test_lineage_follows_the_best_final_trial_back_to_its_proxy_trial(report):
    lineage = report.data["lineage"]
    assert lineage["exported"] == ""
    assert [s["study"] for s in lineage["steps"]] == ["final", "validation", "proxy"]
    proxy_id = lineage["steps"][2]["trial_id"]
    assert next(p for p in report.data["pairs"] if p["trial"] == 1)["proxy_trial"] == proxy_id
    assert "Lineage of the best candidate so far (no model exported yet)" in report.html


def test_curves_come_from_the_event_files(sample, report):
    curves = study(report, "proxy")["curves"]["1"]
    assert curves["train"]["step"] == [10.0, 20.0, 30.0, 40.0]
    assert set(curves["train"]) == {"step", "loss", "learning_rate"}
    result = sample.records.read_result("proxy", 1)
    assert curves["eval"][METRIC][-1] == pytest.approx(result.metrics[METRIC], rel=1e-4)
    # The final trial has no logs: it says where it looked; the failed and open trials none.
    errors = study(report, "final")["curve_errors"]
    assert "no training logs under" in errors["1"] and "final/trials/000001/logs" in errors["1"]
    assert (
        "3" not in study(report, "proxy")["curves"] and "12" not in study(report, "proxy")["curves"]
    )


def test_curves_written_by_tensorflow_are_read(tmp_path):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(tmp_path / "logs" / "train"))
    with writer.as_default():
        for step in range(1, 101):
            tf.summary.scalar("loss", 1.0 / step, step=step)
            tf.summary.scalar("learning_rate", 0.1, step=step)
            tf.summary.text("note", "text is skipped", step=step)
    writer.close()
    curves = read_curves(LocalStore(tmp_path), "logs")
    assert set(curves.splits) == {"train"}
    assert curves.splits["train"]["loss"][:2] == pytest.approx([1.0, 0.5])
    thin = curves.thinned(10).splits["train"]
    assert len(thin["step"]) == 10 and thin["step"][0] == 1 and thin["step"][-1] == 100


def test_a_truncated_event_file_is_reported_not_raised(sample, tmp_path):
    store = LocalStore(tmp_path)
    write_logs(tmp_path / "logs", 20, 0.5, 0)
    (name,) = store.list("logs/train")
    data = store.read_bytes(f"logs/train/{name}")
    store.write_bytes(f"logs/train/{name}", data[:-7])
    with pytest.raises(CurvesError, match="truncated record"):
        read_curves(store, "logs")


def test_unreadable_logs_leave_the_trial_without_curves_and_say_why(tmp_path):
    exp = write_sample(tmp_path, proxy_trials=5)
    logs = exp.layout.trial_logs_dir("proxy", 2)
    (name,) = exp.store.list(f"{logs}/train")
    exp.store.write_bytes(f"{logs}/train/{name}", b"\x05\x00\x00\x00\x00\x00\x00\x00garbage!")
    proxy = study(render_experiment(exp), "proxy")
    assert "2" not in proxy["curves"] and "1" in proxy["curves"]
    assert proxy["curve_errors"]["2"].startswith("its training logs cannot be read:")


def test_importance_is_the_share_of_variance_each_decision_explains():
    # Decision "a" splits the rewards into {1, 1} and {0, 0}: it explains all the variance;
    # "b" pairs one high with one low reward in each choice: none.
    rewards = [1.0, 1.0, 0.0, 0.0]
    choices = [["x", "p"], ["x", "q"], ["y", "p"], ["y", "q"]]
    ranked = importance(rewards, choices, ["a", "b"])
    assert [(d["id"], d["score"]) for d in ranked] == [("a", 1.0), ("b", 0.0)]
    assert ranked[0]["choices"] == [
        {"value": "x", "mean": 1.0, "n": 2},
        {"value": "y", "mean": 0.0, "n": 2},
    ]
    assert importance([1.0, 2.0], [["x"], ["y"]], ["a"]) == []  # too few trials
    assert importance([1.0, 1.0, 1.0], [["x"], ["y"], ["x"]], ["a"]) == []  # no variance


def test_the_page_is_self_contained_and_holds_its_data_once(report):
    html = report.html
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    assert "https://" not in html.split('id="kfnas-data"')[0]
    assert page_json(html) == json.loads(json.dumps(report.data))
    packed = re.search(r'id="kfnas-plotly">([A-Za-z0-9+/=]+)</script>', html).group(1)
    plotly = gzip.decompress(base64.b64decode(packed)).decode()
    assert plotly.startswith("/**\n* plotly.js v")
    for section in ("study-proxy", "study-validation", "study-final", 'id="pairs"'):
        assert section in html


def test_text_from_records_cannot_break_out_of_the_page(tmp_path):
    exp = write_sample(tmp_path, proxy_trials=4)
    evil = "</script><script>alert(1)</script><!--"
    bad = TrialResult(2, TrialStatus.FAILED, error=evil)
    exp.store.write_text(exp.layout.trial_result("proxy", 2), bad.to_json())
    html = render_experiment(exp).html
    assert "<script>alert(1)" not in html
    assert page_json(html)["studies"][0]["trials"][1]["error"] == evil


def test_an_experiment_without_trials_renders_empty_states(tmp_path):
    store = LocalStore(tmp_path)
    store.write_text(ExperimentLayout(SPEC.name).experiment_json(), SPEC.to_json())
    report = render_experiment(open_experiment(str(tmp_path / SPEC.name)))
    assert report.html.count("Not started: no trial yet.") == 3
    assert "No completed trial yet: no lineage to show." in report.html
    assert "_No completed trial yet._" in report.markdown


def test_markdown_lists_top_candidates_and_failures(report):
    md = report.markdown
    assert "## Study proxy (mnasnet)" in md
    assert "- trial 3 (FAILED): OOM when allocating tensor" in md
    table = [line for line in md.split("## Study validation")[0].splitlines() if line[:2] == "| "]
    ranks = [int(line.split("|")[1]) for line in table[1:]]
    assert ranks == list(range(1, 11))


def test_write_report_replaces_the_stored_files(sample, report):
    uris = write_report(sample.store, sample.layout, report)
    assert Path(uris["html"]).read_text() == report.html
    assert Path(uris["markdown"]).read_text() == report.markdown


def _big_study(n: int) -> StudyData:
    """``n`` completed spinenet trials with 40-point curves, as a large search would have."""
    points = [
        (str(p.id), p.literal_values) for p in dna_spec(get_space("spinenet")).decision_points
    ]
    rng = random.Random(0)
    steps = [float(s) for s in range(100, 4001, 100)]
    trials = []
    for trial_id in range(1, n + 1):
        value = rng.uniform(0.2, 0.5)
        metrics = {"AP": value, "latency_ms": rng.uniform(10, 60), "flops": rng.uniform(1e9, 9e9)}
        metrics |= {"params": rng.uniform(1e6, 9e6), "latency_p90_ms": 70.0}
        result = TrialResult(trial_id, TrialStatus.COMPLETED, metrics, value, duration_s=600.0)
        row = trial_row(trial_id, result, "AP")
        curves = {
            "train": {
                "step": steps,
                "loss": [rng.uniform(0.5, 3) for _ in steps],
                "learning_rate": [rng.uniform(0, 0.1) for _ in steps],
            },
            "eval": {"step": steps[4::5], "AP": [rng.uniform(0, 0.5) for _ in steps[4::5]]},
        }
        curves = {
            k: {t: [float(f"{v:.5g}") for v in vs] for t, vs in c.items()}
            for k, c in curves.items()
        }
        decisions = {name: rng.choice(values) for name, values in points}
        trials.append(TrialData(None, row, decisions, curves=curves))
    return StudyData("proxy", "spinenet", "regularized_evolution", trials)


def test_a_thousand_trial_report_stays_under_5_mb(sample):
    from kfnas.views.report import build_report

    studies = [_big_study(1000)]
    report = build_report(page_data(sample.spec, sample.uri, studies), studies)
    size = len(report.html.encode())
    assert size < 5_000_000, f"{size / 1e6:.2f} MB"
    assert len(to_json(report.data)) > 1_000_000  # the trials are in it


def test_a_result_line_says_whose_measurement_a_reused_latency_is():
    metrics = {"AP": 0.5, "latency_ms": 4.54, "latency_p90_ms": 5.13}
    fresh = TrialResult(1, TrialStatus.COMPLETED, metrics, reward=0.5, duration_s=59)
    assert describe_result(fresh, "AP") == (
        "COMPLETED AP 0.5000 reward 0.5000 latency 4.5 ms (p90 5.1) (59 s)"
    )
    reused = TrialResult(
        1,
        TrialStatus.COMPLETED,
        metrics,
        reward=0.5,
        duration_s=59,
        measurement={"reused_from": {"study": "proxy", "trial_id": 8}},
    )
    assert describe_result(reused, "AP").endswith(
        "latency 4.5 ms (p90 5.1, measured as proxy trial 8) (59 s)"
    )
