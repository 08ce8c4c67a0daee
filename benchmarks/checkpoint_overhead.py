"""What checkpointing to the store costs a trial, and what a kill costs it once it does.

One run, real processes and a real (local) store, kfnas' smallest detection trial (RetinaNet around
a SpineNet-MBConv backbone, 64 px generated TFRecords, batch 2) trained ``--steps`` steps on the
CPU with a checkpoint every ``--interval`` steps:

* **kill and resume**: the trial runs as its job does (``python -m kfnas.stages.worker``), is
  SIGKILLed by itself at step ``--kill-at`` (right after that step's train summary: no checkpoint
  is taken then), and is rerun; the rerun restores the newest complete checkpoint from the store.
  Printed: the step it resumed from, the steps trained again (goal: at most ``--interval``), and
  that the result counts 2 attempts;
* **cost, side by side**: the same trial (same architecture and seed) trained in this process with
  checkpoints every ``--interval`` steps and with checkpointing off (both schedules 0), in
  alternating order ``--repeats`` times. Printed: the training loop's seconds both ways and the
  relative difference (noisy on a shared machine), and the direct figure: the seconds the loop
  spent saving checkpoints and staging them for upload (``checkpoint_seconds``, measured inside the
  trainer) over the loop's seconds (goal: under 3%). Uploads run on a background thread; they
  count only through their contention with training, which the side-by-side figure shows.

A checkpoint costs about the same whatever the interval (saving every variable of the model and
optimizer, then hard links and a copy of the logs), so the fraction is that cost over the
interval's training time; the script also prints it for the budget's default schedule
(``checkpoint_every_minutes``: 10). Pick ``--interval`` so that the kill does not land on a
checkpoint step, or the figure for steps retrained is trivially 0.

Run: ``.venv/bin/python benchmarks/checkpoint_overhead.py [--steps 400] [--kill-at 300]
[--interval 120] [--repeats 1]``; the defaults take a few minutes on two CPU cores. The last line
is a one-line JSON summary.

To measure another store (a GCS bucket), pass ``--store gs://bucket/prefix``.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kfnas import stages
from kfnas.config.spec import BudgetSpec
from kfnas.data.synthetic import write_detection_dataset
from kfnas.store import open_experiment

GOAL_OVERHEAD = 0.03

SPEC = """
name: {name}
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {{min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            head_num_convs: 1, head_num_filters: 16, validation_batch_size: 2,
            pre_nms_score_threshold: 0.0, max_num_detections: 10}}
studies:
  proxy: {{space: spinenet_mbconv, budget: {{rounds: 1, trials_per_round: 1}}}}
budget: {{train_steps: {steps}, batch_size: 2, latency_runs: 5,
         checkpoint_every_steps: {every}, checkpoint_every_minutes: 0}}
seed: 1
"""

# The trial job, killed by itself right after the train summary of step ``kill_at`` (the runner
# writes one every 100 steps): a pod OOM-killed mid-training.
KILLED_WORKER = """
import os, signal, sys
from kfnas.training import trainer
summaries = trainer._TrialRun._write_train_summaries
def summaries_then_die(self):
    summaries(self)
    if self.step >= {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
trainer._TrialRun._write_train_summaries = summaries_then_die
from kfnas.stages.worker import main
sys.exit(main(sys.argv[1:]))
"""


def _experiment(store: str, name: str, steps: int, every: int, data: list[str]) -> tuple[str, int]:
    uri = stages.init_experiment(
        SPEC.format(name=name, steps=steps, every=every), [f"store_root={store}", *data]
    )
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    return uri, trial_id


def _job(uri: str, trial_id: int, code: str | None = None) -> tuple[int, str]:
    command = ["-c", code] if code else ["-m", "kfnas.stages.worker"]
    done = subprocess.run(
        [sys.executable, *command, uri, "proxy", str(trial_id)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return done.returncode, done.stdout + done.stderr


def kill_and_resume(store: str, data: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Runs the trial as a job, SIGKILLed at ``--kill-at``, then reruns it."""
    uri, trial_id = _experiment(store, "killed", args.steps, args.interval, data)
    code, output = _job(uri, trial_id, KILLED_WORKER.format(kill_at=args.kill_at))
    if code != -signal.SIGKILL:
        raise SystemExit(f"the trial was not killed (exit {code}):\n{output[-3000:]}")
    start = time.perf_counter()
    code, output = _job(uri, trial_id)
    rerun_s = time.perf_counter() - start
    result = open_experiment(uri).records.read_result("proxy", trial_id)
    if code != 0 or result is None or not result.completed:
        raise SystemExit(f"the rerun did not complete (exit {code}):\n{output[-3000:]}")
    resumed = result.start_steps[-1]
    return {
        "killed_at_step": args.kill_at,
        "resumed_from_step": resumed,
        "steps_retrained": args.kill_at - resumed,
        "attempts": result.attempts,
        "rerun_seconds": rerun_s,
    }


def side_by_side(store: str, data: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Trains the trial with and without checkpoints, alternating, in this process."""
    runs: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
    for repeat in range(args.repeats):
        order = ("with", "without") if repeat % 2 == 0 else ("without", "with")
        for kind in order:
            every = args.interval if kind == "with" else 0
            uri, trial_id = _experiment(store, f"{kind}-{repeat}", args.steps, every, data)
            result = stages.run_trial(uri, "proxy", trial_id)
            if not result.completed:
                raise SystemExit(f"the {kind} run did not complete: {result.error}")
            runs[kind].append(result.metrics)

    def median(kind: str, key: str) -> float:
        return statistics.median(m[key] for m in runs[kind])

    with_s, without_s = median("with", "train_seconds"), median("without", "train_seconds")
    checkpoint_s = median("with", "checkpoint_seconds")
    count = (args.steps - 1) // args.interval
    each = checkpoint_s / count if count else 0.0
    default_interval_s = BudgetSpec().checkpoint_every_minutes * 60
    return {
        "seconds_per_checkpoint": each,
        "fraction_at_default_schedule": each / default_interval_s,
        "train_seconds_with": with_s,
        "train_seconds_without": without_s,
        "side_by_side_overhead": with_s / without_s - 1,
        "checkpoint_seconds_in_loop": checkpoint_s,
        "checkpoint_fraction_of_loop": checkpoint_s / with_s,
        "checkpoints_in_loop": count,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Runs both measurements, prints them and the JSON summary; returns the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--kill-at", type=int, default=300)
    parser.add_argument("--interval", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--store", default="", help="store root (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not 0 < args.kill_at < args.steps or args.kill_at % 100:
        parser.error("--kill-at must be a multiple of 100 (a train summary) below --steps")
    with tempfile.TemporaryDirectory(prefix="kfnas-checkpoint-bench-") as work:
        files = write_detection_dataset(Path(work, "data"), num_train=16, num_validation=4)
        data = [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]
        data.append(f"data.annotations={files.annotations}")
        store = args.store or str(Path(work, "store"))
        resume = kill_and_resume(store, data, args)
        cost = side_by_side(store, data, args)
    print(f"{args.steps}-step CPU training, a checkpoint every {args.interval} steps")
    print(
        f"  killed at step {resume['killed_at_step']}: resumed from step "
        f"{resume['resumed_from_step']}, {resume['steps_retrained']} steps trained again "
        f"(goal <= {args.interval}), {resume['attempts']} attempts recorded"
    )
    print(
        f"  training loop: {cost['train_seconds_with']:.2f} s with checkpoints, "
        f"{cost['train_seconds_without']:.2f} s without ({cost['side_by_side_overhead']:+.1%})"
    )
    print(
        f"  checkpointing inside the loop: {cost['checkpoint_seconds_in_loop']:.3f} s for "
        f"{cost['checkpoints_in_loop']} checkpoints = {cost['checkpoint_fraction_of_loop']:.2%} "
        f"of the loop (goal < {GOAL_OVERHEAD:.0%})"
    )
    print(
        f"  {cost['seconds_per_checkpoint']:.3f} s per checkpoint: at the default schedule (every "
        f"{BudgetSpec().checkpoint_every_minutes:g} minutes) "
        f"{cost['fraction_at_default_schedule']:.3%} of the loop"
    )
    summary = {
        **resume,
        **cost,
        "steps": args.steps,
        "interval": args.interval,
        "retrained_within_interval": resume["steps_retrained"] <= args.interval,
        "overhead_below_goal": cost["checkpoint_fraction_of_loop"] < GOAL_OVERHEAD,
    }
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
