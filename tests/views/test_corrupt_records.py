"""Corrupt trial records are set aside: ``TrialRecords`` stands in or leaves out, rows say CORRUPT.

A truncated ``result.json`` reads as a FAILED stand-in (``strict=True`` raises), a broken or
missing ``trial.json`` leaves the trial out of ``history`` while its id stays taken, every such
file is listed by ``corrupt`` with how to repair it, and ``corrupt_row`` shows it as CORRUPT.
"""

from __future__ import annotations

import pytest

from kfnas.records.trial import RecordError, TrialResult, TrialSpec, TrialStatus
from kfnas.store import ExperimentLayout, LocalStore
from kfnas.store.trials import CORRUPT_REASON, CorruptRecordWarning, TrialRecords
from kfnas.views.rows import CORRUPT, corrupt_row


def _spec(trial_id: int) -> TrialSpec:
    return TrialSpec("exp", "proxy", trial_id, 1, "mnasnet", "{}", "{}")


@pytest.fixture
def records(tmp_path) -> TrialRecords:
    """Trials 1..5: 1 done, 2 truncated result, 3 broken spec, 4 a folder without spec, 5 open."""
    records = TrialRecords(LocalStore(tmp_path), ExperimentLayout("exp"))
    for trial_id in (1, 2, 3, 5):
        records.write_spec(_spec(trial_id))
    records.write_result("proxy", TrialResult(1, TrialStatus.COMPLETED, {"AP": 0.5}, 0.5))
    layout, store = records.layout, records.store
    store.write_text(layout.trial_result("proxy", 2), '{"trial_id": 2, "sta')
    store.write_text(layout.trial_spec("proxy", 3), '{"experiment": "exp", "study": 7}')
    store.write_text(f"{layout.trial_dir('proxy', 4)}/logs/error.txt", "left behind")
    return records


def test_history_stands_in_for_a_corrupt_result_and_leaves_out_a_corrupt_spec(records):
    with pytest.warns(CorruptRecordWarning) as caught:
        history = records.history("proxy")
    assert [(spec.trial_id, r and r.status) for spec, r in history] == [
        (1, TrialStatus.COMPLETED),
        (2, TrialStatus.FAILED),
        (5, None),
    ]
    assert history[1][1].error.startswith(f"{CORRUPT_REASON}: ")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3 and all("delete or restore" in m for m in messages)
    assert "000002/result.json cannot be read" in messages[0]
    assert "counts as FAILED" in messages[0]
    assert "000003/trial.json cannot be read" in messages[1]
    assert "has no trial.json" in messages[2] and "id is not reused" in messages[2]
    assert records.next_trial_id("proxy") == 6


def test_strict_reads_raise_and_the_file_is_left_as_it_is(records):
    with pytest.raises(RecordError, match=r"000002/result\.json: trial result is not valid JSON"):
        records.read_result("proxy", 2, strict=True)
    with pytest.warns(CorruptRecordWarning):
        assert records.read_result("proxy", 2).status is TrialStatus.FAILED
    assert records.store.read_text(records.layout.trial_result("proxy", 2)).endswith('"sta')
    with pytest.raises(RecordError, match=r"000003/trial\.json"):
        records.read_spec("proxy", 3)


def test_corrupt_lists_each_unreadable_record_with_its_repair(records, recwarn):
    corrupt = records.corrupt("proxy")
    assert [(bad.trial_id, bad.is_result) for bad in corrupt] == [(2, True), (3, False), (4, False)]
    assert not [w for w in recwarn if w.category is CorruptRecordWarning]
    assert corrupt[0].uri.endswith("000002/result.json") and "counts as FAILED" in corrupt[0].repair
    assert corrupt[2].error == "the trial folder has no trial.json"
    row = corrupt_row(corrupt[1], "AP")
    assert (row.trial_id, row.status, row.round, row.reward) == (3, CORRUPT, 0, None)
    assert (
        row.error.startswith(f"{corrupt[1].uri} cannot be read (")
        and "delete or restore" in row.error
    )
    assert corrupt_row(corrupt[0], "AP", _spec(2)).round == 1


def test_a_module_space_needs_the_experiments_spec(tmp_path):
    records = TrialRecords(LocalStore(tmp_path), ExperimentLayout("exp"), spaces=["team.mod:SPACE"])
    records.write_spec(TrialSpec("exp", "proxy", 1, 1, "team.mod:SPACE", "{}", "{}"))
    assert records.read_spec("proxy", 1).space == "team.mod:SPACE"
    with pytest.raises(RecordError, match=r"its spaces: team\.mod:SPACE"):
        records.write_spec(TrialSpec("exp", "proxy", 2, 1, "other.mod:SPACE", "{}", "{}"))
    bare = TrialRecords(LocalStore(tmp_path), ExperimentLayout("exp"))  # No experiment.json.
    assert bare.submitted_spaces() == frozenset()
    with pytest.raises(RecordError, match="its spaces: none"):
        bare.read_spec("proxy", 1)
