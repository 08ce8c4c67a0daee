"""The benchmarks run: each script's ``main`` at its tiniest size, and its JSON summary is sane.

Only the summary's keys and the sanity of its figures are checked (fractions within [0, 1],
counts positive), never timings: the figures themselves are what the scripts are for. The
scripts are not a package, so they are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _last_line_json(capsys) -> dict:
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1])


def test_slot_utilization_compares_the_controller_with_round_barriers(capsys):
    bench = _load("slot_utilization")
    summary = bench.main(
        ["--trials", "6", "--parallelism", "2", "--algorithm", "random", "--seed", "1"]
    )
    assert _last_line_json(capsys) == summary
    assert (summary["trials"], summary["parallelism"], summary["goal"]) == (6, 2, 0.95)
    assert [row["durations"] for row in summary["sources"]] == ["demo", "lognormal"]
    for row in summary["sources"]:
        assert (row["completed"], row["failed"]) == (6, 0)
        for key in (
            "controller_busy_excl_drain",
            "controller_busy_incl_drain",
            "controller_reported",
            "barrier_busy",
        ):
            assert 0.0 <= row[key] <= 1.0, (key, row[key])
        # Proposals: at least the first (both slots) and one more; at most one per trial.
        assert 2 <= row["proposals"] <= 6
        assert row["controller_makespan_s"] > 0 and row["barrier_makespan_s"] > 0
        assert 0 < row["proposal_mean_s"] <= row["proposal_max_s"]
        assert row["history_first10"] == 0  # the first proposal has no history
        assert 0 < row["history_last10"] < 6
        assert row["goal_met"] == (row["controller_busy_excl_drain"] >= 0.95)


def test_slot_utilization_replays_a_recorded_experiment(tmp_path):
    bench = _load("slot_utilization")
    args = bench.argparse.Namespace(
        space="mnasnet", algorithm="random", trials=3, seed=2, parallelism=1, poll_s=5.0
    )
    recorded = bench.write_experiment(str(tmp_path), "recorded", args)
    times = bench.durations("demo", 3, seed=2)
    bench.run_controller(recorded, times, bench.argparse.Namespace(**vars(args), verbose=False))
    assert bench.durations(f"recorded:{recorded.uri}", 5, seed=0) == [*times, *times[:2]]
    empty = bench.write_experiment(str(tmp_path), "empty", args)
    with pytest.raises(ValueError, match="no COMPLETED proxy trial"):
        bench.durations(f"recorded:{empty.uri}", 5, seed=0)
    with pytest.raises(ValueError, match="unknown duration source 'uniform'"):
        bench.durations("uniform", 5, seed=0)


def test_slot_utilization_refuses_a_budget_without_steady_state(capsys):
    bench = _load("slot_utilization")
    with pytest.raises(SystemExit):
        bench.main(["--trials", "2", "--parallelism", "2"])
    assert "--trials (2) must exceed --parallelism" in capsys.readouterr().err


def test_pipeline_size_counts_tasks_executors_and_bytes(capsys):
    bench = _load("pipeline_size")
    summary = bench.main(["--rounds", "1", "2"])
    assert _last_line_json(capsys) == summary
    assert summary["etcd_object_limit_bytes"] == 1572864
    assert [row["rounds"] for row in summary["sizes"]] == [1, 2]
    for row in summary["sizes"]:
        assert row["tasks"] > 0 and row["executors"] > 0 and row["bytes"] > 0
        assert row["tasks"] >= row["executors"]  # every executor runs in some task
    assert set(summary["growth"]) == {"tasks", "executors", "bytes"}
    assert all(ratio >= 1.0 for ratio in summary["growth"].values())


def test_search_efficiency_compares_algorithms_on_the_trained_table(capsys):
    bench = _load("search_efficiency")
    algorithms = ["--algorithms", "random", "regularized_evolution"]
    summary = bench.main(["--seeds", "2", "--trials", "10", "--jobs", "1", *algorithms])
    assert _last_line_json(capsys) == summary
    table = bench.load_table()
    assert len(table.accuracy) == summary["points"] == 1440
    assert summary["optimum"] == table.optimum == max(table.accuracy)
    assert (summary["seeds"], summary["trials"], summary["parallelism"]) == (2, [10], 4)
    assert summary["skipped"] == {}
    assert 0 < summary["uniform_expected_best"][0] <= summary["optimum"]
    assert [row["algorithm"] for row in summary["algorithms"]] == [
        "random",
        "regularized_evolution",
    ]
    for row in summary["algorithms"]:
        for mode in ("controller", "in_process"):
            figures = row[mode]
            assert set(figures) >= {"mean_best", "mean_regret", "regret_sem", "found_optimum"}
            assert all(0 <= best <= summary["optimum"] for best in figures["mean_best"])
            assert all(regret >= 0 for regret in figures["mean_regret"])
            assert 0.0 <= figures["found_optimum"] <= 1.0
        assert 0.0 <= row["in_process"]["repeated_fraction"] <= 1.0
