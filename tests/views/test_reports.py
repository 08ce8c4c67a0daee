"""Experiment reports: HTML page, Markdown summary, Pareto front, Kendall tau, store writes."""

import dataclasses
import math
from pathlib import Path

import pytest

from kfnas.config.spec import ConstraintSpec, ExperimentSpec, ObjectiveSpec, StudySpec
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.search.ranking import kendall_tau, pareto_front
from kfnas.store import ExperimentLayout, LocalStore
from kfnas.views.report import Refinement, Report, _plot_pareto, _rows, build_report, write_report

PNG = "data:image/png;base64,"
LONG_REASON = "ResourceExhausted: OOM <script>alert(1)</script> " + "x" * 400

SPEC = ExperimentSpec(
    name="demo",
    studies={"proxy": StudySpec(space="spinenet_mbconv"), "validation": StudySpec()},
    objectives=ObjectiveSpec(
        metric="AP", constraints=[ConstraintSpec(measure="latency_ms", target=25.0)]
    ),
)


def trial(trial_id, round_, study="proxy"):
    return TrialSpec("demo", study, trial_id, round_, "spinenet_mbconv", "{}", "{}")


def done(trial_id, ap, reward, latency, flops, params):
    metrics = {"AP": ap, "latency_ms": latency, "flops": flops, "params": params}
    return TrialResult(trial_id, TrialStatus.COMPLETED, metrics=metrics, reward=reward)


# (AP, latency): 1 (0.30, 12), 2 (0.35, 20), 4 (0.40, 30) are the Pareto front; 6 (0.25, 25) is
# dominated by 2. By reward: 2, 4, 1, 6.
PROXY = [
    (trial(1, 1), done(1, 0.30, 0.28, 12.0, 150e6, 1_200_000)),
    (trial(2, 1), done(2, 0.35, 0.33, 20.0, 300e6, 2_500_000)),
    (trial(3, 1), TrialResult(3, TrialStatus.FAILED, error=LONG_REASON)),
    (trial(4, 2), done(4, 0.40, 0.31, 30.0, 450e6, 3_000_000)),
    (trial(5, 2), TrialResult(5, TrialStatus.INFEASIBLE, error="NaN loss at step 3")),
    (trial(6, 2), done(6, 0.25, 0.20, 25.0, 200e6, 900_000)),
    (trial(7, 2), None),
]
VALIDATION = [
    (trial(1, 1, "validation"), done(1, 0.50, 0.48, 20.0, 300e6, 2_500_000)),
    (trial(2, 1, "validation"), done(2, 0.52, 0.47, 30.0, 450e6, 3_000_000)),
    (trial(3, 1, "validation"), done(3, 0.45, 0.45, 12.0, 150e6, 1_200_000)),
]
# (proxy score, full-training score): one discordant pair of three, tau = (2 - 1) / 3.
PAIRS = [(0.33, 0.50), (0.31, 0.52), (0.28, 0.45)]


@pytest.fixture(scope="module")
def report():
    return build_report(SPEC, PROXY)


def table_rows(markdown):
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_html_embeds_two_plots_and_names_the_experiment(report):
    assert isinstance(report, Report)
    assert report.html.startswith("<!DOCTYPE html>")
    assert report.html.count(PNG) == 2
    assert "kfnas report: demo" in report.html
    assert "spinenet_mbconv" in report.html and "regularized_evolution" in report.html
    assert "COMPLETED: 4, FAILED: 1, INFEASIBLE: 1, PENDING: 1" in report.html
    assert report.kendall_tau is None
    assert "Proxy vs full training" not in report.html  # no validation, no pairs


def test_html_escapes_user_strings():
    page = build_report(dataclasses.replace(SPEC, name="<b>"), PROXY).html
    assert "kfnas report: &lt;b&gt;" in page
    assert "<b>" not in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_markdown_lists_top_candidates_by_reward(report):
    header, *rows = table_rows(report.markdown)
    assert header == [
        "rank", "trial id", "round", "status", "AP", "reward", "latency ms", "p90 ms",
        "M mult-adds", "params",
    ]  # fmt: skip
    assert [row[1] for row in rows] == ["2", "4", "1", "6"]
    assert rows[0] == [
        "1", "2", "1", "COMPLETED", "0.3500", "0.3300", "20.00", "-", "300.0", "2,500,000",
    ]  # fmt: skip
    assert rows[1][:7] == ["2", "4", "2", "COMPLETED", "0.4000", "0.3100", "30.00"]
    assert rows[3][8:] == ["200.0", "900,000"]


def test_markdown_counts_statuses_and_gives_truncated_reasons(report):
    md = report.markdown
    assert "COMPLETED: 4, FAILED: 1, INFEASIBLE: 1" in md
    assert "- trial 5 (INFEASIBLE): NaN loss at step 3" in md
    [failed] = [line for line in md.splitlines() if line.startswith("- trial 3 (FAILED)")]
    assert failed.endswith("...") and len(failed) < 250
    assert "&lt;script&gt;" in failed  # raw HTML in Markdown would be rendered by viewers


def test_top_k_limits_the_table():
    rows = table_rows(build_report(SPEC, PROXY, top_k=2).markdown)[1:]
    assert [row[1] for row in rows] == ["2", "4"]


def test_validation_section_and_pairs_give_a_third_plot_and_tau():
    report = build_report(SPEC, PROXY, VALIDATION, pairs=PAIRS)
    assert report.html.count(PNG) == 3
    assert report.kendall_tau == pytest.approx(1 / 3)
    assert "Kendall tau = 0.333 over 3 candidates" in report.html
    assert "Kendall tau = 0.333" in report.markdown
    assert "Study validation" in report.markdown
    assert [r[1] for r in table_rows(report.markdown) if r[0] != "rank"][-3:] == ["1", "2", "3"]


def test_fewer_than_two_pairs_give_no_tau_and_say_so():
    report = build_report(SPEC, PROXY, VALIDATION, pairs=[(0.3, 0.5)])
    assert report.kendall_tau is None
    assert "at least 2 are needed" in report.html and "at least 2 are needed" in report.markdown
    no_pairs = build_report(SPEC, PROXY, VALIDATION)
    assert no_pairs.kendall_tau is None and no_pairs.html.count(PNG) == 2
    assert "no proxy/full-training pairs were given" in no_pairs.html


def test_empty_history_still_renders():
    report = build_report(SPEC, [])
    assert report.html.count(PNG) == 2
    assert "No completed trial yet" in report.markdown


def test_pareto_plot_marks_the_front_and_the_latency_target():
    fig = _plot_pareto(_rows(PROXY, "AP"), "AP", [25.0])
    ax = fig.axes[0]
    front = next(line for line in ax.lines if line.get_label() == "Pareto front")
    assert list(front.get_xdata()) == [12.0, 20.0, 30.0]
    assert list(front.get_ydata()) == [0.30, 0.35, 0.40]
    target = next(line for line in ax.lines if line.get_label().startswith("latency target"))
    assert list(target.get_xdata()) == [25.0, 25.0]


def test_pareto_front():
    points = [(0.30, 12.0), (0.35, 20.0), (0.25, 25.0), (0.40, 30.0), (0.35, 20.0), (0.2, 40.0)]
    assert pareto_front(points) == [0, 1, 3, 4]  # equal points are both kept
    assert pareto_front([(0.5, 10.0), (0.5, 9.0)]) == [1]  # same quality, cheaper
    assert pareto_front([(0.5, 10.0), (0.6, 10.0)]) == [1]  # same cost, better
    assert pareto_front([(math.nan, 1.0), (0.1, 5.0)]) == [1]
    assert pareto_front([]) == []


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # 6 pairs, one discordant (2, 3): (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert kendall_tau([1.0], [2.0]) is None
    assert kendall_tau([], []) is None
    assert kendall_tau([1, 2, 3], [5, 5, 5]) is None  # undefined: one side all tied
    with pytest.raises(ValueError, match="paired"):
        kendall_tau([1, 2], [1])


def test_write_report_writes_both_files(tmp_path, report):
    store = LocalStore(tmp_path)
    uris = write_report(store, ExperimentLayout("demo"), report)
    assert set(uris) == {"html", "markdown"}
    assert uris["html"].endswith("demo/reports/report.html")
    assert uris["markdown"].endswith("demo/reports/top_candidates.md")
    assert Path(uris["html"]).read_text() == report.html
    assert Path(uris["markdown"]).read_text() == report.markdown
    assert store.read_text("demo/reports/report.html") == report.html


def test_refinement_studies_get_a_section_with_choices_and_two_plots():
    scaling = [
        (trial(1, 1, "scaling"), done(1, 0.55, 0.50, 18.0, 500e6, 3_000_000)),
        (trial(2, 1, "scaling"), done(2, 0.60, 0.41, 40.0, 900e6, 4_000_000)),
        (trial(3, 1, "scaling"), TrialResult(3, TrialStatus.FAILED, error="OOM")),
    ]
    choices = {1: "image_size=512, options.head_num_convs=4", 2: "image_size=640", 3: "x"}
    refinement = Refinement("scaling", "spinenet_scaling", scaling, choices)
    built = build_report(SPEC, PROXY, VALIDATION, pairs=PAIRS, refinements=[refinement])
    assert built.html.count(PNG) == 5  # by trial, Pareto, proxy vs full, scaling x 2
    assert "Study scaling (spinenet_scaling)" in built.html
    assert "scaling: choices ranked" in built.html and "scaling: AP vs latency" in built.html
    section = built.markdown.split("## Study scaling (spinenet_scaling)")[1]
    rows = table_rows(section)
    assert rows[0][-1] == "choice"
    # Ranked by reward: trial 1 (0.50) before trial 2 (0.41), each with what it changed.
    assert [(row[1], row[-1]) for row in rows[1:3]] == [
        ("1", "image_size=512, options.head_num_convs=4"),
        ("2", "image_size=640"),
    ]
    assert "trial 3 (FAILED): OOM" in section
