"""ASHA in the search controller, on a real store with trials replayed on a virtual clock.

Each simulated trial "trains" for as many virtual seconds as the steps it adds (a promotion only
its rung's extra steps: it continues its parent's checkpoint) and writes the reward a real trial
would: an architecture's quality times a learning curve in the steps. The checks: new
architectures start at rung 0, a freed slot goes to a promotion before a new architecture, each
promotion is of a trial that was in its rung's top 1/eta when promoted, promotions go on after the
proposal budget is spent, the algorithm never sees them, and ranking puts the top rung first.
Real trials that stop early or continue a parent's checkpoint: ``test_fidelity_trials.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib

from kfnas.launch.simulated import SimulatedLauncher, VirtualClock
from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.search.asha import HalvingSchedule, RungTrial, promotions
from kfnas.stages._common import best_trials
from kfnas.stages.controller import run_search
from kfnas.store import open_experiment, open_store
from kfnas.store.layout import ExperimentLayout
from kfnas.validation import experiment_spec

SPEC = """
name: asha-test
task: {kind: classification}
studies:
  proxy:
    space: mnasnet
    multi_fidelity: {scheduler: asha, min_steps: 10, reduction_factor: 3}
algorithm: {name: regularized_evolution, options: {population_size: 4, tournament_size: 2}}
budget: {rounds: 4, trials_per_round: 3, train_steps: 90}
seed: 5
"""
SCHEDULE = HalvingSchedule(10, 90, 3)


def _quality(dna_json: str) -> float:
    return int(hashlib.sha256(dna_json.encode()).hexdigest()[:8], 16) / 2**32


def _experiment(tmp_path):
    spec = experiment_spec(SPEC, [f"store_root={tmp_path}"])
    open_store(str(tmp_path)).write_text(
        ExperimentLayout(spec.name).experiment_json(), spec.to_json()
    )
    return open_experiment(f"{tmp_path}/{spec.name}")


def _launcher(exp, clock, events):
    def steps(job):
        spec = exp.records.read_spec(job.study, job.trial_id)
        parent = spec.promoted_from
        start = 0 if parent is None else exp.records.read_spec(job.study, parent).budget
        return spec, spec.budget["train_steps"] - (0 if parent is None else start["train_steps"])

    def duration(job):
        spec, added = steps(job)
        events.append(("start", clock.time(), spec.trial_id, spec.rung, spec.promoted_from))
        return float(added)

    def finish(job):
        spec, _ = steps(job)
        total = spec.budget["train_steps"]
        reward = _quality(spec.dna_json) * total / (total + 20.0)
        exp.records.write_result(
            job.study,
            TrialResult(spec.trial_id, TrialStatus.COMPLETED, {"top1": reward}, reward=reward),
        )
        events.append(("end", clock.time(), spec.trial_id, spec.rung, reward))

    return SimulatedLauncher(clock, duration, finish)


def test_asha_promotes_the_best_of_each_rung_as_slots_free(tmp_path):
    exp, clock, events, lines = _experiment(tmp_path), VirtualClock(), [], []
    state = run_search(
        exp,
        "proxy",
        _launcher(exp, clock, events),
        parallelism=3,
        run_id="run-1",
        clock=clock,
        poll_s=1.0,
        log=lines.append,
    )
    history = exp.records.history("proxy")
    specs = {spec.trial_id: spec for spec, _ in history}
    new = [s for s in specs.values() if s.promoted_from is None]
    promoted = [s for s in specs.values() if s.promoted_from is not None]
    # The budget counts new architectures (4 rounds x 3), each starting at rung 0 (10 steps).
    assert len(new) == state.proposed == 12
    assert all(s.rung == 0 and s.budget["train_steps"] == 10 for s in new)
    assert promoted and state.promoted == len(promoted)
    assert all(r is not None and r.completed for _, r in history)
    # Each promotion: the same architecture, one rung up, with that rung's steps; a parent once.
    for child in promoted:
        parent = specs[child.promoted_from]
        assert child.dna_json == parent.dna_json and child.rung == parent.rung + 1
        assert child.budget["train_steps"] == SCHEDULE.rungs[child.rung]
    assert len({c.promoted_from for c in promoted}) == len(promoted)
    assert any(c.rung == 2 for c in promoted)  # some architecture reached the full 90 steps
    # Replayed in order: a promotion's parent was in the top 1/eta of the trials finished at its
    # rung then, and no new architecture started while a trial could be promoted.
    trials: dict[int, RungTrial] = {}
    for kind, _, trial_id, rung, extra in events:
        if kind == "end":
            trials[trial_id] = dataclasses.replace(trials[trial_id], value=extra, finished=True)
            continue
        if extra is None:
            assert promotions(SCHEDULE, list(trials.values()), 1) == []
        else:
            done = sorted(
                (t.value for t in trials.values() if t.rung == rung - 1 and t.finished),
                reverse=True,
            )
            keep = len(done) // 3
            assert keep >= 1 and trials[extra].value >= done[keep - 1]
        trials[trial_id] = RungTrial(trial_id, rung, None, False, extra)
    # The algorithm saw only its own proposals: their rounds are the proposal rounds.
    assert sorted({s.round for s in new}) == list(range(1, max(s.round for s in new) + 1))
    # Ranking: the top rung first, a promoted parent never stands for its architecture.
    best = best_trials(history, "proxy", 3)
    assert specs[best[0]].rung == 2
    assert not {specs[c].promoted_from for c in best} & set(best)
    assert any("promoted to rung 2 (90 steps)" in line for line in lines)


def test_a_restarted_asha_controller_counts_only_proposals_and_restarts_promotions(tmp_path):
    exp, clock, events = _experiment(tmp_path), VirtualClock(), []
    launcher = _launcher(exp, clock, events)
    run_search(exp, "proxy", launcher, parallelism=2, run_id="run-1", clock=clock, poll_s=1.0)
    count = len(exp.records.trial_ids("proxy"))
    # A second controller over the finished study proposes nothing and promotes nothing more.
    state = run_search(
        exp, "proxy", launcher, parallelism=2, run_id="run-2", clock=clock, poll_s=1.0
    )
    assert state.proposed == 12 and len(exp.records.trial_ids("proxy")) == count
    assert state.promoted == 0


def test_a_local_study_promotes_after_each_trial_with_one_slot(tmp_path, monkeypatch):
    from kfnas.cli import local_study

    exp = _experiment(tmp_path)
    order = []

    def run_trial(uri, study, trial_id):  # what a trial writes, without training
        spec = exp.records.read_spec(study, trial_id)
        total = spec.budget["train_steps"]
        reward = _quality(spec.dna_json) * total / (total + 20.0)
        result = TrialResult(trial_id, TrialStatus.COMPLETED, {"top1": reward}, reward=reward)
        exp.records.write_result(study, result)
        order.append((trial_id, spec.rung))
        return result

    monkeypatch.setattr(local_study, "run_trial", run_trial)
    run = local_study.run_study(exp.uri, "proxy", rounds=2)
    specs = {spec.trial_id: spec for spec, _ in exp.records.history("proxy")}
    assert sum(s.promoted_from is None for s in specs.values()) == 6  # 2 rounds x 3
    promoted = [s for s in specs.values() if s.promoted_from is not None]
    assert promoted and all(specs[s.promoted_from].rung == s.rung - 1 for s in promoted)
    # The third rung-0 result makes the best of three promotable: it runs before the fourth.
    assert [rung for _, rung in order[:4]] == [0, 0, 0, 1]
    assert specs[run.top[0]].rung == max(s.rung for s in specs.values())
