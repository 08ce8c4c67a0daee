"""ExperimentLayout paths and names, and the offline checks of store URIs (root_problems)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kfnas.store import ExperimentLayout, LocalStore, open_store, root_problems

# --- layout --------------------------------------------------------------------------------------


def test_paths_are_rendered_under_the_experiment() -> None:
    layout = ExperimentLayout("exp-1")
    trial = "exp-1/studies/proxy/trials/000007"
    assert layout.experiment_json() == "exp-1/experiment.json"
    assert layout.study_dir("proxy") == "exp-1/studies/proxy"
    assert layout.trials_dir("proxy") == "exp-1/studies/proxy/trials"
    assert layout.trial_dir("proxy", 7) == trial
    assert layout.trial_spec("proxy", 7) == f"{trial}/trial.json"
    assert layout.trial_result("proxy", 7) == f"{trial}/result.json"
    assert layout.trial_model_dir("proxy", 7) == f"{trial}/model"
    assert layout.trial_logs_dir("proxy", 7) == f"{trial}/logs"
    assert layout.reports_dir() == "exp-1/reports"
    assert layout.export_dir("v1.2") == "exp-1/export/v1.2"


@pytest.mark.parametrize(
    ("trial_id", "name"), [(0, "000000"), (7, "000007"), (123456, "123456"), (1234567, "1234567")]
)
def test_trial_ids_are_zero_padded_and_parsed_back(trial_id: int, name: str) -> None:
    assert ExperimentLayout.trial_dir_name(trial_id) == name
    assert ExperimentLayout.parse_trial_id(name) == trial_id


@pytest.mark.parametrize(
    ("name", "words"),
    [("7", "zero-padded"), ("0000007", "zero-padded"), ("abc", "expected digits"), ("", "digits")],
)
def test_bad_trial_folder_names_are_refused(name: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ExperimentLayout.parse_trial_id(name)


@pytest.mark.parametrize("name", ["", "my exp", "a/b", "..", "exp.1", "ünï"])
def test_bad_experiment_and_study_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"experiment name .* letters, digits, '-' and '_'"):
        ExperimentLayout(name)
    with pytest.raises(ValueError, match=r"study name .* letters, digits, '-' and '_'"):
        ExperimentLayout("ok").trials_dir(name)


@pytest.mark.parametrize("trial_id", [-1, True, 1.5, "3"])
def test_bad_trial_ids_are_refused(trial_id: object) -> None:
    with pytest.raises(ValueError, match="integer >= 0"):
        ExperimentLayout("exp").trial_dir("proxy", trial_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["", "../v1", ".hidden", "v/1"])
def test_bad_export_versions_are_refused(version: str) -> None:
    with pytest.raises(ValueError, match="export version"):
        ExperimentLayout("exp").export_dir(version)


# --- root_problems and open_store ----------------------------------------------------------------


def test_gs_uri_without_a_bucket() -> None:
    assert root_problems("gs://") == ["gs:// URI 'gs://' has no bucket; write gs://BUCKET/PREFIX"]


def test_gs_uri_with_a_bad_bucket_name() -> None:
    (problem,) = root_problems("gs://My_Bucket/runs")
    assert "bucket name 'My_Bucket'" in problem
    assert "lowercase" in problem


def test_a_good_gs_uri_has_no_problems() -> None:
    assert root_problems("gs://my-bucket/runs/a") == []
    assert root_problems("gs://my-bucket") == []


def test_unsupported_scheme_lists_the_supported_ones() -> None:
    (problem,) = root_problems("s3://x")
    assert "unsupported store scheme 's3://'" in problem
    assert "gs://BUCKET/PREFIX" in problem
    assert "local path" in problem
    with pytest.raises(ValueError, match="unsupported store scheme 's3://'"):
        open_store("s3://x")


def test_a_local_root_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for uri in (str(blocker / "store"), f"file://{blocker}/store/deeper"):
        (problem,) = root_problems(uri)
        assert f"{str(blocker)!r} is a file, not a folder" in problem
        assert "writable path" in problem
        assert "mount a writable volume" in problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write any folder")
def test_an_unwritable_local_root(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        (problem,) = root_problems(str(locked / "store"))
        assert f"folder {str(locked)!r} cannot be written" in problem
        assert "mount a writable volume" in problem
    finally:
        locked.chmod(0o700)


def test_a_writable_local_root_has_no_problems(tmp_path: Path) -> None:
    assert root_problems(str(tmp_path / "new" / "store")) == []
    assert root_problems(f"file://{tmp_path}") == []


def test_open_store_gives_a_local_store_for_paths(tmp_path: Path) -> None:
    for uri in (str(tmp_path / "s"), f"file://{tmp_path}/s"):
        store = open_store(uri)
        assert isinstance(store, LocalStore)
        assert store.root == str(tmp_path / "s")
