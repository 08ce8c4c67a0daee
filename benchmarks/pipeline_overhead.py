"""What the local pipeline costs over the training its trials do: wall time against training time.

Runs the search pipeline under ``kfp.local`` (``kfnas.pipelines.local.run_search_locally``, the
DAG ``kfnas run`` and the cluster run) on generated detection data, then reads every trial's
``result.json`` from the store and prints, side by side from this one run:

* ``wall``: the pipeline's wall time, from the call to its return;
* ``training``: the seconds all trials spent in their training loops (``train_seconds``, the first
  step's tracing included), and beside it the loops after their first steps (``steps - 1`` steps
  at the trials' steady ``train_steps_per_second``): what the trials would cost if tracing were
  free, the stricter denominator;
* ``trials``: the trials' whole wall time (``duration_s``: building the task and model, training,
  evaluation, upload), and what of it lies outside the training loops (the trials' fixed cost);
* ``measurement steps``: the seconds the measurement step spent on each trained model
  (``result.json``'s ``measurement.total_seconds``: rebuilding it, FLOPs, the timed runs);
* the ratios ``wall / training`` and ``wall / trials``, and what lies outside the trials (process
  start-up and imports of every step, init, propose, select, report, export).

With ``--parallelism 1`` (the default) trials run one after another, so ``wall - trials`` is the
pipeline's own overhead; with 2, ``kfp.local`` runs two trials at once and the ratio also shows
what the overlap gains on this machine. Longer ``--steps`` make training dominate; the overhead
per step is mostly fixed, so the ratio falls toward 1.

``--min-seconds`` sets ``measurement.min_seconds`` (each timing's window, during which the local
launcher pauses the trials; 0: exactly ``latency_runs`` calls), to show what the window costs.

Run: ``.venv/bin/python benchmarks/pipeline_overhead.py [--rounds 2] [--trials 2] [--steps 20]
[--min-seconds 0]``.
The last line is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.data import write_detection_dataset
from kfnas.pipelines.local import run_search_locally
from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.store import open_experiment

SPEC = """
name: pipeline-overhead
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            head_num_convs: 1, head_num_filters: 16, validation_batch_size: 8}
studies:
  proxy: {space: spinenet_mbconv}
algorithm: {name: regularized_evolution, options: {population_size: 2, tournament_size: 2}}
budget: {train_steps: 20, batch_size: 4}
objectives: {metric: AP}
seed: 5
"""


def main() -> None:
    """Runs the pipeline once and prints its wall time against its trials' training time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="proxy rounds (default 2)")
    parser.add_argument("--trials", type=int, default=2, help="trials per round (default 2)")
    parser.add_argument("--parallelism", type=int, default=1, help="trials at once (default 1)")
    parser.add_argument("--steps", type=int, default=20, help="proxy training steps (default 20)")
    parser.add_argument(
        "--full-steps", type=int, default=40, help="validation and final steps (default 40)"
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=None,
        help="measurement.min_seconds: each timing's least seconds (default: the spec default)",
    )
    args = parser.parse_args()
    overrides = [f"budget.train_steps={args.steps}"]
    if args.min_seconds is not None:
        overrides.append(f"measurement.min_seconds={args.min_seconds}")

    with tempfile.TemporaryDirectory(prefix="kfnas-overhead-") as tmp:
        root = Path(tmp)
        files = write_detection_dataset(root / "data", num_train=32, num_validation=8)
        arguments = {
            "spec_yaml": SPEC,
            "overrides": overrides,
            "store_root": str(root / "store"),
            "train_data": files.train_pattern,
            "validation_data": files.validation_pattern,
            "annotations": files.annotations,
            "full_train_steps": args.full_steps,
            "trials_per_round": args.trials,
            "top_k": 1,
            "model_version": "v1",
        }
        with (root / "kfp.log").open("w") as log, contextlib.redirect_stderr(log):
            start = time.monotonic()
            uri = run_search_locally(
                arguments,
                rounds=args.rounds,
                trials_per_round=args.trials,
                parallelism=args.parallelism,
                top_k=1,
                pipeline_root=root / "kfp",
                log_file=log,
            )
            wall = time.monotonic() - start
        exp = open_experiment(uri)
        results = [
            (study, result)
            for study in exp.spec.studies
            for _, result in exp.records.history(study)
            if result is not None
        ]
        budgets = {
            (study, r.trial_id): int(exp.records.read_spec(study, r.trial_id).budget["train_steps"])
            for study, r in results
        }

    completed = [(s, r) for s, r in results if r.status is TrialStatus.COMPLETED]
    training = sum(r.metrics.get("train_seconds", 0.0) for _, r in completed)
    steady = sum(_steady_seconds(budgets[study, r.trial_id], r) for study, r in completed)
    trials = sum(r.duration_s for _, r in results)
    measuring = sum(r.measurement.get("total_seconds", 0.0) for _, r in results)
    fixed = trials - training  # in the trials, outside their training loops
    steps = sum(1 for _ in results)
    print(f"pipeline: {args.rounds} rounds x {args.trials} trials, parallelism {args.parallelism}")
    print(f"trials trained: {steps} ({len(completed)} completed)")
    print(f"{'wall':>28}: {wall:8.1f} s")
    print(f"{'trials (whole)':>28}: {trials:8.1f} s")
    print(f"{'training loops':>28}: {training:8.1f} s")
    print(f"{'... after their first steps':>28}: {steady:8.1f} s")
    each = max(steps, 1)
    print(f"{'trials outside their loops':>28}: {fixed:8.1f} s ({fixed / each:.1f} s each)")
    print(f"{'measurement steps':>28}: {measuring:8.1f} s ({measuring / each:.1f} s each)")
    print(f"{'outside trials, measurements':>28}: {wall - trials - measuring:8.1f} s")
    print(f"{'wall / training':>28}: {wall / training:8.2f}")
    print(f"{'wall / after first steps':>28}: {wall / steady:8.2f}")
    print(f"{'wall / trials':>28}: {wall / trials:8.2f}")
    summary = {
        "wall_s": round(wall, 1),
        "trial_s": round(trials, 1),
        "train_s": round(training, 1),
        "trial_fixed_s": round(fixed, 1),
        "measurement_s": round(measuring, 1),
        "steady_train_s": round(steady, 1),
        "wall_over_train": round(wall / training, 2),
        "wall_over_steady_train": round(wall / steady, 2),
        "wall_over_trials": round(wall / trials, 2),
        "trials": steps,
        "parallelism": args.parallelism,
    }
    print(json.dumps(summary))


def _steady_seconds(train_steps: int, result: TrialResult) -> float:
    """A completed trial's loop after its first step: its other steps at its steady speed."""
    speed = result.metrics.get("train_steps_per_second", 0.0)
    start = result.start_steps[-1] if result.start_steps else 0
    return (train_steps - start - 1) / speed if speed > 0 else 0.0


if __name__ == "__main__":
    main()
