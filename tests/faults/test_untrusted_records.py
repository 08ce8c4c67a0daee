"""Stored records are data, not code: crafted and corrupt records in a real study, local and GCS.

The study holds, after its first round: a completed trial; one whose ``result.json`` is
truncated; one whose ``trial.json`` names a foreign ``_type`` (a module on ``sys.path`` that
records its own import) in both ``arch_json`` and ``dna_json``; and one whose ``trial.json`` is
truncated. Proposing, selecting, listing, reporting and rerunning go on, the corrupt records show
as CORRUPT and the foreign module is never imported. A handoff naming a foreign type, and a trial
naming a ``module:object`` space the experiment's spec does not, are refused on read, again
without import.
"""

import dataclasses
import json
import sys
import warnings
from pathlib import Path

import pytest

from kfnas.cli import main
from kfnas.export.handoff import HandoffError, read_handoff
from kfnas.records.trial import RecordError, TrialResult, TrialStatus
from kfnas.spaces import get_space
from kfnas.spaces.base import load_architecture
from kfnas.stages import init_experiment, propose_trials, report, run_trial, select_top
from kfnas.store import open_experiment
from kfnas.store.trials import CorruptRecordWarning
from kfnas.views.listing import list_trials

SPEC = """
name: untrusted
task: {kind: detection, options: {max_level: 5}}
studies:
  proxy: {space: spinenet_mbconv}
algorithm: {name: regularized_evolution, options: {population_size: 4, tournament_size: 2}}
budget: {trials_per_round: 4, max_consecutive_failures: 10}
seed: 3
"""
EVIL = "evil_module_xyz"
FOREIGN = json.dumps({"_type": f"{EVIL}.Payload", "command": "touch pwned"})
GOLDEN_HANDOFF = Path(__file__).parents[1] / "golden" / "records" / "handoff.json"


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A module on sys.path that leaves a file behind when imported; the file's path."""
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = folder / "imported"
    (folder / f"{EVIL}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
        "import pyglove as pg\n\n\nclass Payload(pg.Object):\n    pass\n\n\nSPACE = None\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    assert EVIL not in sys.modules
    yield marker
    assert EVIL not in sys.modules, f"{EVIL} was imported"
    assert not marker.exists(), f"{EVIL} was imported"


@pytest.fixture(params=["local", "gcs"])
def store_root(request, tmp_path, monkeypatch):
    if request.param == "local":
        return str(tmp_path / "store")
    emulator = request.getfixturevalue("gcs_emulator")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
    return f"gs://{request.getfixturevalue('gcs_bucket')}/nas"


@pytest.fixture
def data(detection_data):
    files = detection_data
    return [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]


def _damaged_study(uri: str) -> None:
    """Round 1: trial 1 completed, 2 truncated result, 3 foreign types, 4 truncated spec."""
    exp = open_experiment(uri)
    records, store, layout = exp.records, exp.store, exp.layout
    assert propose_trials(uri, "proxy", 1) == [1, 2, 3, 4]
    records.write_result("proxy", TrialResult(1, TrialStatus.COMPLETED, {"AP": 0.3}, 0.3))
    whole = TrialResult(2, TrialStatus.COMPLETED, {"AP": 0.2}, 0.2).to_json()
    store.write_text(layout.trial_result("proxy", 2), whole[: len(whole) // 2])
    crafted = dataclasses.replace(
        records.read_spec("proxy", 3), arch_json=FOREIGN, dna_json=FOREIGN
    )
    store.write_text(layout.trial_spec("proxy", 3), crafted.to_json())
    records.write_result("proxy", TrialResult(3, TrialStatus.COMPLETED, {"AP": 0.9}, 0.9))
    spec = store.read_text(layout.trial_spec("proxy", 4))
    store.write_text(layout.trial_spec("proxy", 4), spec[:40])


def test_the_study_goes_on_past_corrupt_and_crafted_records(evil, store_root, data, capsys):
    uri = init_experiment(SPEC, [f"store_root={store_root}", *data])
    _damaged_study(uri)
    exp = open_experiment(uri)

    with pytest.warns(CorruptRecordWarning) as caught:
        assert propose_trials(uri, "proxy", 2) == [5, 6, 7, 8]  # ids go on past the corrupt 4
    said = "\n".join(str(w.message) for w in caught)
    assert "proxy trial 2" in said and "result.json" in said and "counts as FAILED" in said
    assert "proxy trial 4" in said and "delete or restore" in said
    assert f"{EVIL}.Payload" in said  # trial 3's DNA, left out of the search history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptRecordWarning)
        history = {spec.trial_id: result for spec, result in exp.records.history("proxy")}
        # Selection is data only: trial 3's record is a valid trial, its reward the best.
        assert select_top(uri, "proxy", 2) == [3, 1]
        rerun = run_trial(uri, "proxy", 2)  # Returns the stand-in; trains nothing.
        written = report(uri)
    assert sorted(history) == [1, 2, 3, 5, 6, 7, 8]
    assert history[2] is not None and history[2].status is TrialStatus.FAILED
    assert history[2].error.startswith("corrupt record") and rerun == history[2]
    assert exp.store.exists(f"{exp.layout.reports_dir()}/report.html")
    assert written["html"].endswith("report.html")
    # The truncated result is not overwritten; it is listed with its repair.
    with pytest.raises(json.JSONDecodeError):
        json.loads(exp.store.read_text(exp.layout.trial_result("proxy", 2)))
    corrupt = exp.records.corrupt("proxy")
    assert [(bad.trial_id, bad.is_result) for bad in corrupt] == [(2, True), (4, False)]

    rows = {row.trial_id: row for row in list_trials(uri, "proxy")}
    assert [rows[i].status for i in sorted(rows)] == [
        "COMPLETED",
        "CORRUPT",
        "COMPLETED",
        "CORRUPT",
        *["PENDING"] * 4,
    ]
    assert rows[4].error.startswith(corrupt[1].uri) and "delete or restore" in rows[4].error
    assert main(["trials", uri, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    statuses = [line["status"] for line in lines]
    assert statuses[:4] == ["COMPLETED", "CORRUPT", "COMPLETED", "CORRUPT"]

    # Whoever trains trial 3 decodes its architecture with the space's own classes only.
    crafted = exp.records.read_spec("proxy", 3)
    with pytest.raises(RecordError, match=rf"names the type\(s\) {EVIL}\.Payload"):
        load_architecture(get_space(crafted.space), crafted.arch_json, "trial 3")


def test_a_handoff_naming_a_foreign_type_is_refused_on_read(evil, tmp_path):
    handoff = json.loads(GOLDEN_HANDOFF.read_text())
    handoff["arch_json"] = FOREIGN
    path = tmp_path / "handoff.json"
    path.write_text(json.dumps(handoff))
    with pytest.raises(HandoffError, match=rf"{EVIL}\.Payload.*nothing was imported"):
        read_handoff(str(path))
    # Nested inside an otherwise valid architecture, and through a function or a pickle.
    arch = json.loads(json.loads(GOLDEN_HANDOFF.read_text())["arch_json"])
    for bad in (
        {"_type": "function", "name": "os.system"},
        {"_type": "pyglove.core.utils.json_conversion._OpaqueObject", "value": "gASV"},
    ):
        handoff["arch_json"] = json.dumps({**arch, "extra": [bad]})
        path.write_text(json.dumps(handoff))
        with pytest.raises(HandoffError, match="nothing was imported"):
            read_handoff(str(path))


def test_a_user_space_named_only_by_a_stored_record_is_never_imported(evil, tmp_path, data):
    uri = init_experiment(SPEC, [f"store_root={tmp_path}", *data])
    exp = open_experiment(uri)
    propose_trials(uri, "proxy", 1)
    spec = dataclasses.replace(exp.records.read_spec("proxy", 1), space=f"{EVIL}:SPACE")
    exp.store.write_text(exp.layout.trial_spec("proxy", 1), spec.to_json())
    with pytest.raises(RecordError, match=rf"space '{EVIL}:SPACE' is not a space of the exp"):
        exp.records.read_spec("proxy", 1)
    with pytest.warns(CorruptRecordWarning, match="imported only from the spec the user submitted"):
        assert [s.trial_id for s, _ in exp.records.history("proxy")] == [2, 3, 4]
    assert list_trials(uri, "proxy")[0].status == "CORRUPT"
    # Nor is it written: a retraining of a handoff naming such a space stops before its trial.
    with pytest.raises(RecordError, match="or a handoff, so nothing was written"):
        exp.records.write_spec(dataclasses.replace(spec, trial_id=9))
    assert exp.records.trial_ids("proxy") == [1, 2, 3, 4]
