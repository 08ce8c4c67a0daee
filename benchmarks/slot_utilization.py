"""How busy the search controller keeps its trial slots, against the old round barriers.

Replays one sequence of trial durations, side by side in one run, through:

* ``controller``: the real scheduling logic, ``kfnas.stages.controller.run_search``, on a real
  temporary local store with a real algorithm and space (``--algorithm``, ``--space``); trials
  "run" on ``kfnas.launch.simulated.SimulatedLauncher`` over a ``VirtualClock``, so they cost no
  real time while the controller's own work (proposals, store reads and writes) costs its real
  time. Each simulated trial COMPLETES with a deterministic reward computed from its DNA (a fixed
  weighting of its decisions, so evolution has signal), written with ``exp.records.write_result``
  as a real trial would;
* ``barriers``: the old design, rounds of ``--parallelism`` trials in the same order, the next
  round starting when the slowest trial of the round ends (no proposal or pod start-up time is
  counted between rounds, so this is the barriers' best case).

For each duration source it prints the fraction of slot time spent training:

* controller *excluding the drain*: slot time from the start until the moment the last trial
  starts (after that no work is left to give a free slot); the goal, printed next to it, is
  ``>= 0.95``;
* controller *including the drain*: until the last trial ends;
* controller *reported*: ``ControllerState.utilization``, the controller's own figure (a trial
  counts busy until the poll that sees it end);
* barriers: ``sum(durations) / (slots x sum of round makespans)``;

the time to finish all trials both ways, and the proposal latency the controller adds: mean
(``state.proposal_s`` / proposals), max, and the mean over the first and last 10% of proposals
(each proposal replays the whole stored history, so it grows with it).

Duration sources (``--durations``, several allowed): ``demo`` (uniform 88-144 s, the spread
measured in ``make demo``), ``lognormal`` (median 600 s, sigma 0.5: architectures whose cost varies
about 3x) and ``recorded:<experiment uri>`` (the ``duration_s`` of every COMPLETED trial of the
experiment's proxy study, in trial order, cycled if fewer than ``--trials``). Runs are seeded
(``--seed``).

Run: ``.venv/bin/python benchmarks/slot_utilization.py [--trials 40] [--parallelism 8]
[--poll-s 5] [--durations demo lognormal]``. The defaults take two to three minutes per source on
two CPU cores. They are small because each proposal replays the whole stored history, so a run
costs about the square of ``--trials``: ``--trials 200 --parallelism 20`` (the issue's size) takes
about ten minutes per source (one run of it, ``demo``, with two sources run at once on two
cores: 98.7% busy excluding the drain, 93.0% including it, barriers 82.7%; 151 proposals, mean
3.9 s, max 6.5 s, 1.2 s over the first 10% and 6.0 s over the last: the controller proposes ahead
as many trials as slots free during one proposal). The last line is a one-line JSON summary.

To add a duration source: give ``durations`` a branch for its name.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyglove as pg

import kfnas.stages.controller as controller_module
from kfnas.config.studies import PROXY
from kfnas.launch import TrialJob
from kfnas.launch.simulated import SimulatedLauncher, VirtualClock
from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.stages.controller import run_search
from kfnas.store import Experiment, ExperimentLayout, open_experiment, open_store
from kfnas.validation import experiment_spec

#: The fraction of slot time the controller should keep training, excluding the drain.
GOAL = 0.95

SPEC = """
name: {name}
task: {{kind: classification}}
studies:
  proxy: {{space: {space}}}
algorithm: {{name: {algorithm}}}
budget: {{rounds: {trials}, trials_per_round: 1, max_consecutive_failures: 3}}
seed: {seed}
"""


def durations(source: str, n: int, seed: int) -> list[float]:
    """``n`` trial durations in seconds from ``source`` (see the module docstring).

    Raises:
        ValueError: An unknown source, or a recorded experiment without completed proxy trials.
    """
    rng = random.Random(seed)
    if source == "demo":
        return [rng.uniform(88.0, 144.0) for _ in range(n)]
    if source == "lognormal":
        return [rng.lognormvariate(math.log(600.0), 0.5) for _ in range(n)]
    if source.startswith("recorded:"):
        uri = source.removeprefix("recorded:")
        exp = open_experiment(uri)
        recorded = [
            result.duration_s
            for _, result in exp.records.history(PROXY)
            if result is not None and result.completed and result.duration_s > 0
        ]
        if not recorded:
            raise ValueError(
                f"experiment {uri!r} has no COMPLETED {PROXY} trial with a duration_s: give the "
                f"URI of an experiment whose proxy study ran (kfnas run), or use --durations demo"
            )
        return [recorded[i % len(recorded)] for i in range(n)]
    raise ValueError(
        f"unknown duration source {source!r}: use demo, lognormal or recorded:<experiment uri>"
    )


def reward_of(dna_json: str, seed: int) -> tuple[float, float]:
    """A deterministic (reward in [0, 1], second objective) computed from a stored DNA.

    The reward is a fixed pseudo-random weighting of the decisions, so a mutation of a good
    architecture tends to stay good (evolution has signal); the second objective (fewer large
    choices) serves multi-objective algorithms.
    """
    numbers = pg.from_json_str(dna_json).to_numbers()
    weights = [_weight(seed, i) for i in range(len(numbers))]
    score = sum(w * x for w, x in zip(weights, numbers, strict=True)) / math.sqrt(len(numbers) or 1)
    return 0.5 + 0.5 * math.tanh(score), -statistics.fmean(numbers or [0])


def _weight(seed: int, position: int) -> float:
    digest = hashlib.sha256(f"{seed}:{position}".encode()).digest()
    return digest[0] / 255.0 * 2.0 - 1.0


def write_experiment(root: str, name: str, args: argparse.Namespace) -> Experiment:
    """An experiment written as ``init_experiment`` writes it (no data check: nothing trains)."""
    text = SPEC.format(
        name=name, space=args.space, algorithm=args.algorithm, trials=args.trials, seed=args.seed
    )
    spec = experiment_spec(text, [f"store_root={root}"])
    open_store(root).write_text(ExperimentLayout(spec.name).experiment_json(), spec.to_json())
    return open_experiment(f"{root}/{spec.name}")


class ReplayClock(VirtualClock):
    """A ``VirtualClock`` that leaves out the benchmark's own work (see ``outside``)."""

    def __init__(self) -> None:
        super().__init__()
        self._excluded = 0.0

    def time(self) -> float:
        """Virtual seconds, less the real time spent ``outside`` the controller."""
        return super().time() - self._excluded

    @contextlib.contextmanager
    def outside(self) -> Iterator[None]:
        """Real time spent in this block does not pass on the clock (a trial's own work)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._excluded += time.perf_counter() - start


@contextlib.contextmanager
def timed_proposals(clock: ReplayClock) -> Iterator[list[tuple[float, int]]]:
    """Times every ``propose_round`` call of the controller: (seconds, stored trials before)."""
    original = controller_module.propose_round
    calls: list[tuple[float, int]] = []

    def propose_round(
        exp: Experiment, study: str, round_index: int, n: int = 0, **kwargs: Any
    ) -> list[int]:
        with clock.outside():
            before = exp.records.next_trial_id(study) - 1
        start = time.perf_counter()
        try:
            return original(exp, study, round_index, n=n, **kwargs)
        finally:
            calls.append((time.perf_counter() - start, before))

    controller_module.propose_round = propose_round
    try:
        yield calls
    finally:
        controller_module.propose_round = original


def run_controller(exp: Experiment, times: Sequence[float], args: argparse.Namespace) -> dict:
    """Replays ``times`` (trial i takes ``times[i - 1]``) through ``run_search``."""
    clock = ReplayClock()

    def duration(job: TrialJob) -> float:
        return times[job.trial_id - 1]

    def finish(job: TrialJob) -> None:
        with clock.outside():  # The trial's work, not the controller's.
            spec = exp.records.read_spec(job.study, job.trial_id)
            reward, second = reward_of(spec.dna_json, args.seed)
            result = TrialResult(
                job.trial_id,
                TrialStatus.COMPLETED,
                {"accuracy": reward},
                reward=reward,
                objectives=(reward, second),
                duration_s=times[job.trial_id - 1],
            )
            exp.records.write_result(job.study, result)

    launcher = SimulatedLauncher(clock, duration, finish)
    start = clock.time()
    with timed_proposals(clock) as calls:
        state = run_search(
            exp,
            PROXY,
            launcher,
            parallelism=args.parallelism,
            run_id="slot-utilization",
            clock=clock,
            poll_s=args.poll_s,
            log=print if args.verbose else _quiet,
        )
    spans = [
        (end - times[job.trial_id - 1], end) for job, end in launcher.jobs.values()
    ]  # (start, end) of each trial's training, virtual seconds
    last_start = max(begin for begin, _ in spans)
    last_end = max(end for _, end in spans)
    before_last = sum(max(0.0, min(end, last_start) - begin) for begin, end in spans)
    trained = sum(end - begin for begin, end in spans)
    seconds = [s for s, _ in calls]
    tenth = max(1, len(calls) // 10)
    return {
        "busy_excl_drain": before_last / (args.parallelism * (last_start - start)),
        "busy_incl_drain": trained / (args.parallelism * (last_end - start)),
        "reported": state.utilization,
        "makespan_s": last_end - start,
        "completed": state.completed,
        "failed": state.failed,
        "proposals": len(calls),
        "proposal_mean_s": state.proposal_s / len(calls),
        "proposal_max_s": max(seconds),
        "proposal_first10_s": statistics.fmean(seconds[:tenth]),
        "proposal_last10_s": statistics.fmean(seconds[-tenth:]),
        "history_first10": calls[tenth - 1][1],
        "history_last10": calls[-tenth][1],
    }


def _quiet(line: str) -> None:
    del line


def run_barriers(times: Sequence[float], slots: int) -> dict:
    """Rounds of ``slots`` trials in order; a round ends when its slowest trial does."""
    rounds = [times[i : i + slots] for i in range(0, len(times), slots)]
    makespan = sum(max(round_) for round_ in rounds)
    return {"busy": sum(times) / (slots * makespan), "makespan_s": makespan}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs every duration source both ways and prints the figures; returns the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="trials in all (default 40)")
    parser.add_argument("--parallelism", type=int, default=8, help="trial slots (default 8)")
    parser.add_argument("--poll-s", type=float, default=5.0, help="controller poll (default 5 s)")
    parser.add_argument(
        "--durations",
        nargs="+",
        default=["demo", "lognormal"],
        help="demo, lognormal or recorded:<experiment uri>, one or more (default: demo lognormal)",
    )
    parser.add_argument("--algorithm", default="regularized_evolution")
    parser.add_argument("--space", default="mnasnet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print the controller's log")
    args = parser.parse_args(argv)
    if args.parallelism < 1 or args.trials <= args.parallelism:
        parser.error(
            f"--trials ({args.trials}) must exceed --parallelism ({args.parallelism}, at least 1): "
            f"with a single proposal there is no steady state to measure"
        )

    print(
        f"{args.trials} trials, {args.parallelism} slots, poll {args.poll_s:g} s, "
        f"{args.algorithm} on {args.space}, seed {args.seed}; goal: controller >= {GOAL:.0%} "
        f"busy excluding the drain"
    )
    header = (
        f"{'durations':<12}{'ctl excl':>9}{'ctl incl':>9}{'ctl rep':>9}{'barrier':>9}"
        f"{'ctl h':>8}{'bar h':>8}{'props':>7}{'mean s':>8}{'max s':>8}{'1st10% s':>10}"
        f"{'last10% s':>10}  goal"
    )
    print(header)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kfnas-slots-") as root:
        for index, source in enumerate(args.durations):
            times = durations(source, args.trials, args.seed)
            exp = write_experiment(root, f"slots-{index}", args)
            ctl = run_controller(exp, times, args)
            bar = run_barriers(times, args.parallelism)
            label = source.split(":", 1)[0]
            met = ctl["busy_excl_drain"] >= GOAL
            print(
                f"{label:<12}{ctl['busy_excl_drain']:>9.1%}{ctl['busy_incl_drain']:>9.1%}"
                f"{ctl['reported']:>9.1%}{bar['busy']:>9.1%}"
                f"{ctl['makespan_s'] / 3600:>8.2f}{bar['makespan_s'] / 3600:>8.2f}"
                f"{ctl['proposals']:>7}{ctl['proposal_mean_s']:>8.3f}{ctl['proposal_max_s']:>8.3f}"
                f"{ctl['proposal_first10_s']:>10.3f}{ctl['proposal_last10_s']:>10.3f}"
                f"  {'met' if met else 'MISSED'}"
            )
            rows.append(
                {
                    "durations": label,
                    "controller_busy_excl_drain": round(ctl["busy_excl_drain"], 4),
                    "controller_busy_incl_drain": round(ctl["busy_incl_drain"], 4),
                    "controller_reported": round(ctl["reported"], 4),
                    "barrier_busy": round(bar["busy"], 4),
                    "controller_makespan_s": round(ctl["makespan_s"], 1),
                    "barrier_makespan_s": round(bar["makespan_s"], 1),
                    "completed": ctl["completed"],
                    "failed": ctl["failed"],
                    "proposals": ctl["proposals"],
                    "proposal_mean_s": round(ctl["proposal_mean_s"], 4),
                    "proposal_max_s": round(ctl["proposal_max_s"], 4),
                    "proposal_first10_s": round(ctl["proposal_first10_s"], 4),
                    "proposal_last10_s": round(ctl["proposal_last10_s"], 4),
                    "history_first10": ctl["history_first10"],
                    "history_last10": ctl["history_last10"],
                    "goal_met": met,
                }
            )
    print(
        "ctl excl/incl: controller busy fraction excluding/including the drain; ctl rep: its own "
        "ControllerState.utilization; h: hours to finish all trials; props: proposals; "
        "1st10%/last10%: mean proposal seconds over the first/last 10% of proposals "
        "(history_first10/history_last10 in the JSON: stored trials at the last of the first "
        "10% and the first of the last 10%)"
    )
    summary = {
        "trials": args.trials,
        "parallelism": args.parallelism,
        "poll_s": args.poll_s,
        "algorithm": args.algorithm,
        "space": args.space,
        "seed": args.seed,
        "goal": GOAL,
        "sources": rows,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
