"""Concurrent writers never mix: real processes race for one trial, one export version, ``latest``.

Each racer is a separate ``python -c`` process on the same store (a local folder, or a bucket on
the GCS emulator that this test process serves); each imports what it needs, then all of them
start at one signal:

- two runners claim the same trial (``kfnas.store.lease.claim_trial``): exactly one runs the body
  (writes ``model/`` files named after itself, then ``result.json``), the other waits and returns
  the same stored result, and every ``model/`` file is the winner's;
- two exporters of the same version (``kfnas.export.package.claim_export``): exactly one writes
  the version's files, both end with the same ``handoff.json``;
- six exporters of six versions move ``export/latest`` (``advance_latest``) at once while this
  process watches it: it only ever moves forward and ends at the newest version.

The real SavedModel export is tested in ``tests/export``; here small fake export files stand in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kfnas.export.package import ExportConflictError, claim_export
from kfnas.store import ArtifactStore, ExperimentLayout, GcsStore, LocalStore
from kfnas.store.lease import ClaimOutcome

LAYOUT = ExperimentLayout("exp")

# Opens the store named by argv[1] ("local:<path>" or "gcs:<endpoint>:<bucket>"), as the test does,
# imports what the bodies use, says it is ready (argv[3]/ready-<name>) and waits for argv[3]/go.
_OPEN = """
import json, os, sys, time
from kfnas.export.package import advance_latest, claim_export
from kfnas.store import ExperimentLayout, LocalStore
from kfnas.store.lease import ClaimOutcome, claim_trial
kind, _, where = sys.argv[1].partition(":")
if kind == "local":
    store = LocalStore(where)
else:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from google.cloud.storage.retry import DEFAULT_RETRY
    from kfnas.store import GcsStore
    endpoint, _, bucket = where.rpartition(":")
    client = storage.Client(project="test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": endpoint})
    retry = DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.1, multiplier=2).with_timeout(5.0)
    store = GcsStore(f"gs://{bucket}/runs", client, retry=retry)
layout = ExperimentLayout("exp")
name, sync = sys.argv[2], sys.argv[3]
open(os.path.join(sync, f"ready-{name}"), "w").close()
while not os.path.exists(os.path.join(sync, "go")):
    time.sleep(0.002)
"""

_RUN_TRIAL = """
ran = False
with claim_trial(store, layout, "proxy", 1, name, ttl_s=5, renew_every_s=1, poll_s=0.1) as claim:
    if claim.outcome is ClaimOutcome.ACQUIRED:
        ran = True
        for part in range(4):
            claim.check()
            store.write_text(f"{layout.trial_model_dir('proxy', 1)}/part{part}", name)
            time.sleep(0.2)
        claim.check()
        store.write_text(layout.trial_result("proxy", 1), json.dumps({"runner": name}),
                         if_absent=True)
result = store.read_text(layout.trial_result("proxy", 1))
print(json.dumps({"name": name, "ran": ran, "result": result}))
"""

_EXPORT = """
version, created = sys.argv[4], sys.argv[5]
folder = layout.export_dir(version)
exported = False
with claim_export(store, layout, version, "final", 0, name, ttl_s=5, renew_every_s=1,
                  poll_s=0.1) as claim:
    if claim.outcome is ClaimOutcome.ACQUIRED:
        exported = True
        for part in ("saved_model/saved_model.pb", "architecture.json", "export.json"):
            claim.check()
            store.write_text(f"{folder}/{part}",
                             json.dumps({"by": name, "study": "final", "trial_id": 0}))
            time.sleep(0.1)
        claim.check()
        store.write_text(layout.handoff_json(version),
                         json.dumps({"by": name, "study": "final", "trial_id": 0,
                                     "created": created}), if_absent=True)
handoff = json.loads(store.read_text(layout.handoff_json(version)))
advance_latest(store, layout.export_latest(), version, handoff["created"])
print(json.dumps({"name": name, "exported": exported, "handoff": handoff}))
"""


@pytest.fixture(params=["local", "gcs"])
def racing_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ArtifactStore, str]:
    """A store and the argument that opens it in a racer process."""
    if request.param == "local":
        return LocalStore(tmp_path / "store"), f"local:{tmp_path / 'store'}"
    emulator = request.getfixturevalue("gcs_emulator")
    client = request.getfixturevalue("gcs_client")
    bucket = request.getfixturevalue("gcs_bucket")
    fast = request.getfixturevalue("fast_retry")
    return GcsStore(f"gs://{bucket}/runs", client, retry=fast), f"gcs:{emulator.endpoint}:{bucket}"


def _race(body: str, where: str, argvs: list[list[str]], sync: Path) -> list[dict]:
    """Runs one racer process per argv; all start their body once every one is ready."""
    code = _OPEN + textwrap.dedent(body)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", code, where, argv[0], str(sync), *argv[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(sync.glob("ready-*"))) < len(argvs):
            failed = [r for r in racers if r.poll() not in (None, 0)]
            assert not failed, failed[0].communicate()[1]
            assert time.monotonic() < deadline, "racers did not get ready"
            time.sleep(0.01)
        (sync / "go").touch()
        outputs = []
        for racer in racers:
            out, err = racer.communicate(timeout=120)
            assert racer.returncode == 0, err
            outputs.append(json.loads(out.strip().splitlines()[-1]))
        return outputs
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()


def test_two_runners_of_one_trial_one_trains_both_return_its_result(racing_store, tmp_path) -> None:
    store, where = racing_store
    outputs = _race(_RUN_TRIAL, where, [["runner-a"], ["runner-b"]], tmp_path)
    ran = [o["name"] for o in outputs if o["ran"]]
    assert len(ran) == 1, outputs
    assert {o["result"] for o in outputs} == {json.dumps({"runner": ran[0]})}
    model = LAYOUT.trial_model_dir("proxy", 1)
    assert store.list(model) == ["part0", "part1", "part2", "part3"]
    assert {store.read_text(f"{model}/{p}") for p in store.list(model)} == {ran[0]}
    holder = json.loads(store.read_text(LAYOUT.trial_lease("proxy", 1)))
    assert holder["owner"] == ran[0] and holder["released"] is True


def test_two_exporters_of_one_version_one_exports(racing_store, tmp_path) -> None:
    store, where = racing_store
    created = "2026-01-01T00:00:00+00:00"
    outputs = _race(_EXPORT, where, [["exp-a", "v1", created], ["exp-b", "v1", created]], tmp_path)
    exported = [o["name"] for o in outputs if o["exported"]]
    assert len(exported) == 1, outputs
    assert outputs[0]["handoff"] == outputs[1]["handoff"]
    assert outputs[0]["handoff"]["by"] == exported[0]
    folder = LAYOUT.export_dir("v1")
    for part in ("saved_model/saved_model.pb", "architecture.json", "export.json"):
        assert json.loads(store.read_text(f"{folder}/{part}"))["by"] == exported[0]
    latest = json.loads(store.read_text(LAYOUT.export_latest()))
    assert (latest["version"], latest["sequence"]) == ("v1", 1)


def test_latest_never_moves_backwards_under_racing_exporters(racing_store, tmp_path) -> None:
    store, where = racing_store
    versions = [f"v{i}" for i in range(1, 7)]
    argvs = [[f"exp-{v}", v, f"2026-01-0{i}T00:00:00+00:00"] for i, v in enumerate(versions, 1)]
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                latest = json.loads(store.read_text(LAYOUT.export_latest()))
                if not seen or seen[-1] != (latest["version"], latest["sequence"]):
                    seen.append((latest["version"], latest["sequence"]))
            except FileNotFoundError:
                pass
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outputs = _race(_EXPORT, where, argvs[::-1], tmp_path)  # the oldest starts last
    finally:
        stop.set()
        watcher.join()
    assert all(o["exported"] for o in outputs)
    latest = json.loads(store.read_text(LAYOUT.export_latest()))
    assert latest["version"] == "v6"
    assert seen, "the watcher never saw latest"
    assert [v for v, _ in seen] == sorted(v for v, _ in seen), seen  # forward only
    assert [s for _, s in seen] == sorted(s for _, s in seen), seen
    assert latest["sequence"] <= len(versions)


def test_an_exporter_of_another_trial_is_refused(store: ArtifactStore) -> None:
    with claim_export(store, LAYOUT, "v1", "final", 0, "a", ttl_s=60, renew_every_s=10) as claim:
        assert claim.outcome is ClaimOutcome.ACQUIRED
        with (
            pytest.raises(ExportConflictError, match=r"belongs to final trial 0.*held by a"),
            claim_export(store, LAYOUT, "v1", "final", 1, "b"),
        ):
            pass
        store.write_text(
            f"{LAYOUT.export_dir('v1')}/export.json", '{"study": "final", "trial_id": 0}'
        )
        store.write_text(LAYOUT.handoff_json("v1"), '{"study": "final", "trial_id": 0}')
    with (
        pytest.raises(ExportConflictError, match=r"export validation trial 3 to another version"),
        claim_export(store, LAYOUT, "v1", "validation", 3, "c"),
    ):
        pass
    with claim_export(store, LAYOUT, "v1", "final", 0, "d") as again:  # a rerun: nothing to do
        assert again.outcome is ClaimOutcome.DONE


@pytest.mark.tf
def test_an_exporter_that_lost_its_claim_writes_nothing(exported_detection, tmp_path) -> None:
    """``export_saved_model`` asks the claim before writing: a taken-over exporter stops at once."""
    from kfnas.export.saved_model import export_saved_model
    from kfnas.store.lease import LeaseLost

    exp = exported_detection.experiment
    trial = exp.records.read_spec("proxy", exported_detection.trial_id)
    model_dir = exp.store.uri(exp.layout.trial_model_dir("proxy", exported_detection.trial_id))
    target = tmp_path / "v2"
    (target / "saved_model").mkdir(parents=True)
    (target / "saved_model" / "by-the-new-holder").write_text("kept")

    def lost() -> None:
        raise LeaseLost("taken over by another exporter")

    with pytest.raises(LeaseLost, match="taken over"):
        export_saved_model(exp.spec, trial, model_dir, str(target), check=lost)
    assert sorted(p.name for p in target.rglob("*")) == ["by-the-new-holder", "saved_model"]
