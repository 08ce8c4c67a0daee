"""One trial job: ``python -m kfnas.stages.worker <experiment uri> <study> <trial id>``.

What a launcher runs for each trial (``kfnas.launch``): the ``run_trial`` stage, which trains,
evaluates and measures the trial and writes its ``result.json`` (a trial that fails is recorded
as FAILED and the process still exits 0). With ``--train-only`` (what the search controller's
trial jobs run) a trial that trained well writes ``trained.json`` instead: a measurement job
(``kfnas.stages.measure_worker``) measures it on the latency device. A non-zero exit means the
trial could not even be recorded (the store unreachable, a crash): the controller then records it
as FAILED with the job's reason. Prints one line with the trial's status.

On a node of a multi-node trial it first builds ``TF_CONFIG`` if the engine does not inject it
(Kubeflow Trainer v2 with the kfnas runtime; ``kfnas.launch.tf_config.prepare_tf_config``); a
``TF_CONFIG`` that names this process nowhere exits with status 2 and the reason, before any
training. Only the chief records the trial.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kfnas.launch.tf_config import ClusterConfigError, prepare_tf_config
from kfnas.records.trial import TrialStatus, TrialTraining
from kfnas.stages.search import run_trial
from kfnas.tasks.tracing import lighten_process


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the trial named on the command line; returns the exit status (0: recorded)."""
    parser = argparse.ArgumentParser(prog="python -m kfnas.stages.worker", description=__doc__)
    parser.add_argument("experiment_uri")
    parser.add_argument("study")
    parser.add_argument("trial_id", type=int)
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="train and evaluate only: a measurement job measures the model (trained.json)",
    )
    args = parser.parse_args(argv)
    try:
        role = prepare_tf_config()  # before TensorFlow starts
    except ClusterConfigError as e:
        print(f"kfnas worker: {e}", file=sys.stderr, flush=True)
        return 2
    lighten_process()  # building and tracing the model make many objects and graph ops
    result = run_trial(args.experiment_uri, args.study, args.trial_id, measure=not args.train_only)
    if role is not None and not role.chief:
        print(
            f"{args.study} trial {result.trial_id}, {role.name} of {role.workers}: trained "
            f"({getattr(result, 'status', TrialStatus.COMPLETED).value}); the chief records "
            f"the result",
            flush=True,
        )
        return 0
    if isinstance(result, TrialTraining):
        print(f"{args.study} trial {result.trial_id}: trained, to be measured", flush=True)
        return 0
    reward = f" reward {result.reward:.4f}" if result.reward is not None else ""
    print(
        f"{args.study} trial {result.trial_id}: {result.status.value}{reward}"
        + (f" ({result.error})" if result.error else ""),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
