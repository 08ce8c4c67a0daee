"""A trial's TensorBoard HParams: its decisions and identity as hparams, final figures as scalars.

The logs are read back with TensorBoard's own loading (``tensorboard_logs.read_run``) and, for a
folder of two trials, with the HParams plugin's handlers, as the dashboard would read them. No
model is trained here: the runner's part is checked on a trial that fails before training.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyglove as pg
import pytest
import yaml
from shared_fixtures import DETECTION_SPEC
from tensorboard_logs import read_run

from kfnas.config.spec import ExperimentSpec
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus, TrialTraining
from kfnas.spaces import get_space
from kfnas.spaces.base import decision_values, dna_spec
from kfnas.training.hparams import (
    TRAINED,
    record_trial,
    trial_hparams,
    write_final_metrics,
    write_hparams,
)

pytestmark = pytest.mark.tf


def _dna_json(space: str, seed: int = 0) -> str:
    return pg.to_json_str(pg.random_dna(dna_spec(get_space(space)), random.Random(seed)))


def _trial(trial_id: int = 3, space: str = "mnasnet", seed: int = 0, **fields) -> TrialSpec:
    values = {
        "experiment": "exp",
        "study": "proxy",
        "trial_id": trial_id,
        "round": 2,
        "space": space,
        "dna_json": _dna_json(space, seed),
        "arch_json": "{}",
        "budget": {"train_steps": 20, "batch_size": 4},
        "seed": 7,
        **fields,
    }
    return TrialSpec(**values)


def test_a_mnasnet_trial_s_hparams_are_its_readable_decisions_and_who_it_is():
    trial = _trial()
    hparams = trial_hparams(None, trial, "COMPLETED")
    decisions = decision_values(get_space("mnasnet"), trial.dna_json)
    assert {k: hparams[k] for k in decisions} == decisions
    assert isinstance(hparams["blocks[0].kernel_size"], int)
    assert hparams["blocks[0].block_fn"] in ("mbconv", "conv")
    assert {k: v for k, v in hparams.items() if k not in decisions} == {
        "study": "proxy",
        "round": 2,
        "seed": 7,
        "status": "COMPLETED",
        "budget.train_steps": 20,
        "budget.batch_size": 4,
    }


def test_decisions_written_with_the_proposal_are_used_without_building_the_dna_spec(
    monkeypatch,
):
    import kfnas.spaces.base as base

    trial = _trial()
    decisions = decision_values(get_space("mnasnet"), trial.dna_json)
    recorded = TrialSpec(**{**trial.__dict__, "decisions": decisions})
    built, build = [], base.dna_spec
    monkeypatch.setattr(base, "dna_spec", lambda space: built.append(space) or build(space))
    hparams = trial_hparams(None, recorded, "COMPLETED")
    assert {k: hparams[k] for k in decisions} == decisions and not built
    computed = trial_hparams(None, trial)  # without them: from the DNA, as before
    assert len(built) == 1
    assert computed == {k: v for k, v in hparams.items() if k != "status"}


def test_a_retrained_copy_names_its_source_and_overrides_and_a_refinement_its_study_s_space():
    copy = _trial(
        study="final",
        source_study="augmentation",
        source_trial=1,
        task_overrides=("task.image_size=256", "task.options.augmentation=autoaugment_detection"),
    )
    hparams = trial_hparams(None, copy)
    assert hparams["source"] == "augmentation/1" and "status" not in hparams
    assert hparams["override:task.image_size"] == 256
    assert hparams["override:task.options.augmentation"] == "autoaugment_detection"
    assert "blocks[0].kernel_size" in hparams
    # A scaling trial's DNA is a point of the scaling study's space, not of the trial's network's.
    spec = ExperimentSpec.from_dict(
        {"studies": {"proxy": {"space": "mnasnet"}, "scaling": {"space": "spinenet_scaling"}}}
    )
    refined = _trial(study="scaling", source_study="validation", source_trial=0)
    refined = TrialSpec(**{**refined.__dict__, "dna_json": _dna_json("spinenet_scaling")})
    scaling = decision_values(get_space("spinenet_scaling"), refined.dna_json)
    assert scaling and scaling.items() <= trial_hparams(spec, refined).items()
    assert not any(k.startswith("blocks[") for k in trial_hparams(None, refined))


def test_the_hparams_plugin_shows_a_folder_of_trials_as_sessions_with_their_metrics(tmp_path):
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import (
        api_pb2,
        backend_context,
        get_experiment,
        list_session_groups,
    )

    trials = [_trial(trial_id, seed=trial_id) for trial_id in (1, 2)]
    for trial in trials:
        run = tmp_path / f"{trial.trial_id:06d}" / "logs"
        training = TrialTraining(trial.trial_id, {"AP": 0.1 * trial.trial_id, "bad": float("nan")})
        assert record_trial(run, None, trial, training)  # the training pod's
        write_final_metrics(run, {"latency_ms": 3.0, "reward": 0.2}, step=20)  # the measurement's
        stored = read_run(run)
        assert stored.group == f"proxy/{trial.trial_id}"
        assert stored.hparams == trial_hparams(None, trial, TRAINED)
        assert stored.scalars["final/AP"] == [(20, pytest.approx(0.1 * trial.trial_id))]
        assert "final/bad" not in stored.scalars  # a NaN metric is left out
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(tmp_path))
    plugin = backend_context.Context(base_plugin.TBContext(data_provider=provider))
    ctx = context.RequestContext()
    experiment = get_experiment.Handler(ctx, plugin, "", api_pb2.GetExperimentRequest()).run()
    infos = {info.name: info for info in experiment.hparam_infos}
    assert infos["blocks[0].kernel_size"].type == api_pb2.DATA_TYPE_FLOAT64
    assert infos["status"].type == api_pb2.DATA_TYPE_STRING
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"final/AP", "final/latency_ms", "final/reward"} <= metrics
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_RUNNING]
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=10, allowed_statuses=statuses
    )
    groups = list_session_groups.Handler(ctx, plugin, "", request).run().session_groups
    by_name = {group.name: group for group in groups}
    assert sorted(by_name) == ["proxy/1", "proxy/2"]
    for trial in trials:
        group = by_name[f"proxy/{trial.trial_id}"]
        assert [s.name for s in group.sessions] == [f"{trial.trial_id:06d}/logs"]
        expected = decision_values(get_space("mnasnet"), trial.dna_json)["blocks[0].kernel_size"]
        assert group.hparams["blocks[0].kernel_size"].number_value == expected
        values = {m.name.tag: m.value for m in group.metric_values}
        assert values["final/AP"] == pytest.approx(0.1 * trial.trial_id)
        assert values["final/reward"] == pytest.approx(0.2)


def test_writing_hparams_never_fails_a_trial(tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    failed = TrialResult(3, TrialStatus.FAILED, error="boom")
    assert not record_trial(blocked / "logs", None, _trial(), failed)
    assert "could not write its TensorBoard HParams" in caplog.text
    with pytest.raises(TypeError):  # the writer itself refuses what TensorBoard cannot show
        write_hparams(tmp_path, {"x": [1]}, {}, step=0, session="s")


def test_a_trial_that_fails_before_training_still_gets_its_hparams(tmp_path):
    from kfnas.training.runner import LOGS_DIR, execute_trial

    spec = ExperimentSpec.from_dict(yaml.safe_load(DETECTION_SPEC))
    trial = _trial(space="spinenet_mbconv", arch_json="not an architecture")
    result = execute_trial(spec, trial, tmp_path, measure=False)
    assert result.status is TrialStatus.FAILED
    stored = read_run(Path(tmp_path) / LOGS_DIR)
    assert stored.hparams["status"] == "FAILED" and stored.hparams["study"] == "proxy"
    decisions = decision_values(get_space("spinenet_mbconv"), trial.dna_json)
    assert decisions and decisions.items() <= stored.hparams.items()
