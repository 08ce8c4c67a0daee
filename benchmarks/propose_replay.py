"""What statelessness costs: the seconds a search step takes to propose a round as a study grows.

A search step (the ``propose_trials`` stage, or the search controller's proposal) is stateless: it
reads the study's trial records from the store, turns them into the history, and proposes the next
round, starting from the study's search snapshot (``kfnas.search.SearchSnapshot``, kept in the
store by the step before) and replaying only the trials since it; without one it replays the whole
history. For each algorithm this runs a real study on a local store, ``--round-size`` trials a
round with deterministic rewards (no training), and when the study holds each of ``--sizes``
trials it times, side by side on the same round:

* ``read``: ``records.history(study)``, every ``trial.json`` and ``result.json``, as the step does;
* ``decode``: ``history_from_records`` (checks each stored DNA, builds none);
* ``snapshot``: ``propose_with_state`` from the stored snapshot, with how many entries it
  replayed; ``full``: the same without a snapshot (every entry replayed; same proposals, checked);
* ``step``: ``read + decode + snapshot``, what the step pays to propose the round;
* ``in-proc``: one in-process generator, fed every trial, proposing the same number (the floor:
  PyGlove builds every DNA as a symbolic object, tens of milliseconds on a SpineNet space);
* ``stage``: the whole ``propose_round`` (all of the above from the store, plus writing the
  round's ``trial.json`` files with their materialized architectures and the new snapshot).

Between the measured sizes the study advances from its snapshot as the step does, writing specs
with a fixed architecture text (materializing each would only slow the benchmark down).

Run: ``.venv/bin/python benchmarks/propose_replay.py [--sizes 0 200 1000 2000] [--round-size 20]
[--space spinenet] [--algorithms regularized_evolution nsga2] [--no-full]``. The last line is the
rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from typing import Any

import pyglove as pg

from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.search import ALGORITHMS, history_from_records, propose_with_state
from kfnas.spaces import get_space
from kfnas.spaces.base import architecture_json, dna_spec
from kfnas.stages._common import propose_round, read_snapshot, write_snapshot
from kfnas.store import Experiment, ExperimentLayout, open_experiment, open_store
from kfnas.validation import experiment_spec

STUDY = "proxy"
SPEC = """
name: propose-replay
task: {task}
studies:
  {study}: {{space: {space}}}
algorithm: {{name: {algorithm}}}
objectives: {{constraints: [{{measure: latency_ms, target: 20.0}}]}}
budget: {{trials_per_round: {round_size}}}
seed: 1
"""


def reward_of(dna: pg.DNA) -> tuple[float, float]:
    """A deterministic stand-in for (accuracy, -latency) computed from the decisions."""
    numbers = dna.to_numbers()
    return (sum(numbers) % 97 / 97.0, -float(sum(numbers[::3]) % 13 + 1))


def open_study(root: str, space: str, algorithm: str, round_size: int) -> Experiment:
    """A new experiment with one study, written as ``init_experiment`` writes it (no data)."""
    kind = get_space(space).tasks[0]
    # SpineNet's default max_level (7) needs larger images than the default: any valid task will do.
    task = (
        "{kind: detection, options: {max_level: 5}}" if kind == "detection" else f"{{kind: {kind}}}"
    )
    text = SPEC.format(
        task=task, study=STUDY, space=space, algorithm=algorithm, round_size=round_size
    )
    spec = experiment_spec(text, [f"store_root={root}"])
    open_store(root).write_text(ExperimentLayout(spec.name).experiment_json(), spec.to_json())
    return open_experiment(f"{root}/{spec.name}")


class InProcess:
    """One generator for the whole study, fed every trial: the cost of proposing in process."""

    def __init__(self, name: str, space: str):
        self.algorithm = ALGORITHMS.get(name)
        self.generator = self.algorithm.create({}, 1)
        self.generator.setup(dna_spec(get_space(space)))

    def feed(self, dna: pg.DNA, value: tuple[float, float]) -> None:
        """Feeds one trial's result."""
        dna.use_spec(self.generator.dna_spec)  # evolution mutates it later: it needs its spec
        self.generator.feedback(dna, value if self.algorithm.multi_objective else value[0])

    def time(self, n: int) -> float:
        """Seconds to propose ``n`` DNA (fewer if the generator runs out)."""
        start = time.perf_counter()
        try:
            for _ in range(n):
                self.generator.propose()
        except StopIteration:
            pass
        return time.perf_counter() - start


def finish(exp: Experiment, trials: list[tuple[int, pg.DNA]], in_process: InProcess) -> None:
    """Writes each trial's result, as a trial would, and feeds it to the in-process generator."""
    for trial_id, dna in trials:
        value = reward_of(dna)
        result = TrialResult(trial_id, TrialStatus.COMPLETED, reward=value[0], objectives=value)
        exp.records.write_result(STUDY, result)
        in_process.feed(dna, value)


def advance(
    exp: Experiment, round_index: int, round_size: int, arch_json: str
) -> list[tuple[int, pg.DNA]]:
    """Proposes a round as ``propose_round`` does, with a fixed architecture text."""
    study = exp.spec.study(STUDY)
    history = history_from_records(exp.records.history(STUDY))
    proposal = propose_with_state(
        study, history, round_size, round_index=round_index, snapshot=read_snapshot(exp, STUDY)
    )
    first = exp.records.next_trial_id(STUDY)
    ids = []
    for offset, dna in enumerate(proposal.dnas):
        spec = TrialSpec(
            experiment=exp.spec.name,
            study=STUDY,
            trial_id=first + offset,
            round=round_index,
            space=study.space,
            dna_json=pg.to_json_str(dna),
            arch_json=arch_json,
        )
        exp.records.write_spec(spec)
        ids.append((spec.trial_id, dna))
    if proposal.snapshot is not None:
        write_snapshot(exp, STUDY, proposal.snapshot)
    return ids


def measure(
    exp: Experiment, round_index: int, args: argparse.Namespace, in_process: InProcess
) -> dict[str, Any]:
    """Times the pieces of proposing ``round_index`` (see the module doc), then proposes it."""
    study = exp.spec.study(STUDY)
    start = time.perf_counter()
    records = exp.records.history(STUDY)
    read = time.perf_counter() - start
    start = time.perf_counter()
    history = history_from_records(records)
    decode = time.perf_counter() - start
    start = time.perf_counter()
    snapshot = read_snapshot(exp, STUDY)
    snap = propose_with_state(
        study, history, args.round_size, round_index=round_index, snapshot=snapshot
    )
    from_snapshot = time.perf_counter() - start
    row: dict[str, Any] = {
        "history": len(history),
        "read_s": read,
        "decode_s": decode,
        "snapshot_s": from_snapshot,
        "replayed": snap.replayed,
        "restored": snap.restored,
        "step_s": read + decode + from_snapshot,
        "full_s": None,
    }
    if args.full:
        start = time.perf_counter()
        full = propose_with_state(study, history, args.round_size, round_index=round_index)
        row["full_s"] = time.perf_counter() - start
        same = [pg.to_json_str(d) for d in full.dnas] == [pg.to_json_str(d) for d in snap.dnas]
        assert same, "a snapshot must give the proposals of a full replay"
    row["in_process_s"] = in_process.time(args.round_size)
    start = time.perf_counter()
    ids = propose_round(exp, STUDY, round_index)
    row["stage_s"] = time.perf_counter() - start
    specs = [exp.records.read_spec(STUDY, trial_id) for trial_id in ids]
    finish(exp, [(s.trial_id, pg.from_json_str(s.dna_json)) for s in specs], in_process)
    return row


def run_algorithm(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One study of ``name`` up to the largest size, measured at each size."""
    rows = []
    with tempfile.TemporaryDirectory() as root:
        exp = open_study(root, args.space, name, args.round_size)
        in_process = InProcess(name, args.space)
        space = get_space(args.space)
        sample = pg.random_dna(dna_spec(space), random.Random(0))
        arch_json = architecture_json(space, sample)
        sizes = sorted(set(args.sizes))
        round_index = 1
        while sizes:
            done = len(exp.records.trial_ids(STUDY))
            if done >= sizes[0]:
                sizes.pop(0)
                row = {"algorithm": name, **measure(exp, round_index, args, in_process)}
                rows.append(row)
                print(format_row(row), flush=True)
            else:
                finish(exp, advance(exp, round_index, args.round_size, arch_json), in_process)
            round_index += 1
    return rows


HEADER = (
    f"{'algorithm':<22}{'history':>8}{'read':>7}{'decode':>8}{'snapshot':>10}{'replayed':>10}"
    f"{'full':>9}{'step':>7}{'in-proc':>9}{'stage':>8}   (seconds)"
)


def format_row(row: dict[str, Any]) -> str:
    full = "-" if row["full_s"] is None else f"{row['full_s']:.2f}"
    return (
        f"{row['algorithm']:<22}{row['history']:>8}{row['read_s']:>7.2f}{row['decode_s']:>8.2f}"
        f"{row['snapshot_s']:>10.2f}{row['replayed']:>10}{full:>9}{row['step_s']:>7.2f}"
        f"{row['in_process_s']:>9.2f}{row['stage_s']:>8.2f}"
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 200, 1000, 2000])
    parser.add_argument("--round-size", type=int, default=20)
    parser.add_argument("--space", default="spinenet")
    parser.add_argument("--algorithms", nargs="+", default=ALGORITHMS.names())
    parser.add_argument(
        "--no-full", dest="full", action="store_false", help="skip the full replays (slow)"
    )
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    rows = []
    for name in args.algorithms:
        rows += run_algorithm(name, args)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
