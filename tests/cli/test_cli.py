"""The kfnas command line: listings, validation messages and exit codes, the demo."""

from pathlib import Path

import pytest
from rich.console import Console

from kfnas import cli
from kfnas.cli import main

SPEC = Path(__file__).parents[2] / "src" / "kfnas" / "demo.yaml"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    # CI has no terminal: rich would fold long cells at 80 columns.
    monkeypatch.setattr(cli._common, "console", Console(width=200, highlight=False))


def run(capsys, *argv):
    status = main(list(argv))
    return status, capsys.readouterr().out


def words(text):
    return " ".join(text.split())


def test_spaces_lists_exact_sizes(capsys):
    status, out = run(capsys, "spaces")
    assert status == 0
    assert "7387964932475008321091901849600000" in out
    assert "spinenet_v2" in out and "detection" in out


@pytest.mark.parametrize(
    ("space", "tasks", "decisions", "size"),
    [
        ("mnasnet", "classification, detection, torch_classification", 42, 9749755840167936),
        ("mnasnet_a1", "classification, detection, torch_classification", 42, 9749755840167936),
        ("efficientnet_v2", "classification, detection", 42, 24346898290704384),
        ("nasfpn", "detection, segmentation", 28, 1931334451200000),
        ("spinenet_mbconv", "detection", 75, 7387964932475008321091901849600000),
    ],
)
def test_spaces_lists_each_space_with_its_tasks_and_exact_size(
    capsys, space, tasks, decisions, size
):
    status, out = run(capsys, "spaces")  # Not a terminal: plain columns, one line a space.
    assert status == 0
    row = next(line for line in out.splitlines() if line.startswith(f"{space} "))
    assert words(row) == f"{space} {tasks} {decisions} {size}"


def test_spaces_show_prints_decisions_and_candidates(capsys):
    status, out = run(capsys, "spaces", "show", "spinenet_v2")
    assert status == 0
    assert "764783588047793273280921600000 architectures" in out
    assert "intermediate_block_levels" in out and "10 (distinct)" in out
    assert "output_blocks[4].input_offsets" in out and "2 (distinct, sorted)" in out
    assert "'bottleneck'" in out
    assert run(capsys, "spaces", "show", "spinenet_v3")[0] == 2
    assert run(capsys, "spaces", "show")[0] == 2


def test_algorithms_and_rewards(capsys):
    assert "population_size=20" in run(capsys, "algorithms")[1]
    assert "MnasNet" in run(capsys, "rewards")[1]


def test_validate_good_and_bad(capsys, tmp_path):
    status, out = run(capsys, "validate", str(SPEC), "--set", f"store_root={tmp_path}")
    assert status == 0 and "is valid" in out
    status, out = run(capsys, "validate", str(SPEC), "--set", "budget.rounds=0")
    assert status == 2
    assert "budget.rounds must be a positive integer, got 0" in words(out)
    status, out = run(capsys, "validate", "missing.yaml")
    assert (status, "spec file 'missing.yaml' does not exist" in words(out)) == (2, True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    assert (
        main(["make-data", "detection", "--out", str(out), "--train", "4", "--validation", "2"])
        == 0
    )
    return [
        "--set", f"data.train={out}/train-*.tfrecord",
        "--set", f"data.validation={out}/validation-*.tfrecord",
        "--set", f"data.annotations={out}/validation_annotations.json",
    ]  # fmt: skip


def test_make_data_writes_the_standard_files(data):
    train = data[1].partition("=")[2]
    assert Path(train.replace("*", "00000-of-00001")).is_file()
    assert Path(data[5].partition("=")[2]).is_file()


def test_make_data_unknown_kind(capsys, tmp_path):
    status, out = run(capsys, "make-data", "detectoin", "--out", str(tmp_path))
    assert status == 2 and "unknown data generator 'detectoin'" in words(out)


def test_init_then_propose(capsys, tmp_path, data):
    status, out = run(capsys, "init", str(SPEC), "--set", f"store_root={tmp_path}", *data)
    assert status == 0, out
    uri = out.strip()
    assert uri.endswith("/demo")
    assert run(capsys, "propose", uri, "--round", "1") == (0, "1 2 3\n")


def test_init_refuses_missing_data(capsys, tmp_path):
    missing = f"data.train={tmp_path}/none-*.tfrecord"
    status, out = run(
        capsys, "init", str(SPEC), "--set", f"store_root={tmp_path}", "--set", missing
    )
    assert status == 2
    assert "matches no file" in words(out) and "kfnas make-data detection" in words(out)


TINY = ["--set", "budget.rounds=1", "--set", "budget.trials_per_round=1",
        "--set", "budget.train_steps=2", "--set", "budget.batch_size=2"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.tf
def test_trial_trains_one_random_architecture(capsys, tmp_path, data):
    status, out = run(capsys, "trial", str(SPEC), *data, *TINY, "--out", str(tmp_path))
    assert status == 0, out
    assert "COMPLETED" in out
    assert (tmp_path / "logs" / "train").is_dir() and (tmp_path / "model").is_dir()


@pytest.mark.slow
@pytest.mark.tf
def test_demo_runs_a_search_and_says_where_results_are(capsys, tmp_path):
    status, out = run(capsys, "demo", "--out", str(tmp_path), *TINY)
    assert status == 0, out
    text = words(out)
    assert "round 1 trial 1: COMPLETED" in text
    assert "Best trials by reward" in text
    assert f"Results: {tmp_path}/store/demo/studies/proxy" in text
    assert (tmp_path / "store" / "demo" / "studies" / "proxy" / "trials" / "000001").is_dir()


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2


def test_validate_shows_the_retraining_studies_init_adds(capsys, tmp_path):
    status, out = run(capsys, "validate", str(SPEC), "--set", f"store_root={tmp_path}")
    assert status == 0 and '"validation"' in out and '"final"' in out


def test_run_refuses_a_bad_spec_before_starting_the_pipeline(capsys, tmp_path):
    status, out = run(capsys, "run", str(SPEC), "--out", str(tmp_path), "--set", "budget.rounds=0")
    assert status == 2
    assert "budget.rounds must be a positive integer, got 0" in words(out)
    assert not (tmp_path / "kfp.log").exists()
