"""A measurement job: ``python -m kfnas.stages.measure_worker <experiment uri> <study> <trial id>``.

What a launcher runs on the latency device for each trained trial (``kfnas.launch``, job kind
``latency``): ``measure_trial``, which writes the trial's ``result.json`` (a model that cannot be
measured is recorded FAILED and the process still exits 0). A non-zero exit means the trial could
not even be recorded: the controller then records it FAILED with the job's reason. Threads are
pinned (``KFNAS_LATENCY_THREADS``) before TensorFlow starts.

``--serve`` keeps one process for many measurements (the local launcher: TensorFlow is imported
once). It reads ``<experiment uri> <study> <trial id>`` lines on stdin and answers on stdout,
one line each: ``pause`` before each timed part (the launcher pauses the trainings running beside
it and answers ``paused``), ``resume`` after it, and ``done <trial id> <status>`` at the end of a
measurement (``error <trial id> <reason>`` when it could not be recorded). Everything else the
process prints goes to stderr. After ``--retire-after`` requests it says ``retiring`` just before
its last answer and exits: the launcher starts a fresh worker for the next request, so memory the
restored models leave behind does not pile up over a long search (``MEASUREMENTS_PER_WORKER``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import IO

from kfnas.launch.base import MEASUREMENTS_PER_WORKER
from kfnas.records.trial import TrialResult
from kfnas.stages.measure import measure_trial
from kfnas.tasks.tracing import lighten_process
from kfnas.training.measurement import release_models


def main(argv: Sequence[str] | None = None) -> int:
    """Measures the trial named on the command line (or serves requests); the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m kfnas.stages.measure_worker", description=__doc__
    )
    parser.add_argument("experiment_uri", nargs="?")
    parser.add_argument("study", nargs="?")
    parser.add_argument("trial_id", type=int, nargs="?")
    parser.add_argument("--serve", action="store_true", help="measure requests read from stdin")
    parser.add_argument(
        "--retire-after",
        type=int,
        default=MEASUREMENTS_PER_WORKER,
        metavar="N",
        help="with --serve: exit after N requests, saying 'retiring' first (0: never; default "
        "%(default)s)",
    )
    args = parser.parse_args(argv)
    if args.retire_after < 0:
        parser.error(f"--retire-after must be >= 0 (0: never), got {args.retire_after}")
    lighten_process()  # rebuilding and tracing models make many objects and graph ops
    if args.serve:
        return serve(sys.stdin, retire_after=args.retire_after)
    if args.trial_id is None:
        parser.error("give <experiment uri> <study> <trial id>, or --serve")
    result = measure_trial(args.experiment_uri, args.study, args.trial_id)
    print(_describe(args.study, result), flush=True)
    return 0


def serve(requests: IO[str], *, retire_after: int = 0) -> int:
    """Measures each requested trial in turn until ``requests`` ends (see the module doc).

    Args:
        requests: ``<experiment uri> <study> <trial id>`` lines, and ``paused`` answers.
        retire_after: Requests to serve before saying ``retiring`` and returning; 0: no limit.
    """
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not mix with answers

    @contextlib.contextmanager
    def exclusive() -> Iterator[None]:
        answers.write("pause\n")
        if requests.readline().strip() != "paused":
            raise RuntimeError("the launcher did not pause the trainings")
        try:
            yield
        finally:
            answers.write("resume\n")

    served = 0
    for line in requests:
        if not line.strip():
            continue
        uri, study, trial_id = line.split()
        try:
            result = measure_trial(uri, study, int(trial_id), exclusive=exclusive)
        except Exception as e:  # reported to the launcher, which records the job FAILED
            answer = f"error {trial_id} {type(e).__name__}: {e}".replace("\n", " ")
        else:
            print(_describe(study, result), file=sys.stderr, flush=True)
            answer = f"done {trial_id} {result.status.value}"
        release_models()  # before the next model is restored
        served += 1
        retiring = retire_after and served >= retire_after
        if retiring:  # before the answer: once it has the answer, the launcher may send more
            answers.write("retiring\n")
        answers.write(answer + "\n")
        if retiring:
            return 0
    return 0


def _describe(study: str, result: TrialResult) -> str:
    latency = result.metrics.get("latency_ms")
    return (
        f"{study} trial {result.trial_id} measured: {result.status.value}"
        + (f" latency {latency:.2f} ms" if latency is not None else "")
        + (f" reward {result.reward:.4f}" if result.reward is not None else "")
        + (f" ({result.error})" if result.error else "")
    )


if __name__ == "__main__":
    sys.exit(main())
