"""How repeatable a model's latency is: measured inside a busy trial (before) vs by the protocol.

The demo's proxy model (``src/kfnas/demo.yaml``: RetinaNet around a SpineNet-MBConv backbone,
64 px inputs; the architecture ``kfnas.training.runner.local_trial(spec, "proxy", seed=--seed)``
draws, since the ``spinenet_mbconv`` space has no reference architecture inside it; weights
seeded with the same seed) has its batch-1 latency measured ``--repeats`` times each way, in
alternating order, in one run:

* ``before``: the old way, inside the trial: ``measure_latency_ms``'s measurement (20 warm-up
  calls, ``--runs`` timed ones, median) with TensorFlow's default threads, in the trial's own
  process, while a neighbouring trial trains: a process training a small Keras model in a loop,
  as a trial sharing the machine would. By default one trial process measures every repetition,
  each through a freshly traced function (as each trial traced its own), which leaves out the
  variation between processes and so flatters the old way; ``--fresh-before`` starts a new
  trial process for each repetition, as each trial was. The neighbour runs while the warm-up and
  timed calls run and is paused otherwise; the fresh function is traced before it resumes (the
  trace is ``measure_latency_ms``'s first, untimed, warm-up call), which only saves benchmark
  time;
* ``after``: the measurement step's way: every repetition in a fresh process that prepares
  itself as the measurement worker does (``kfnas.training.protocol.prepare_measurement``
  before TensorFlow runs anything: the BFC CPU allocator, ``--threads`` pinned, by default
  what a local worker pins, ``LOCAL_THREADS``; then ``kfnas.tasks.tracing.lighten_process``),
  rebuilds the model and calls ``measure_model(model, shape, runs=--runs)`` with nothing else of
  ours running (the local launcher pauses the other trials around the timed parts), with the
  timed calls going on until ``--min-seconds`` have passed (by default the spec's
  ``measurement.min_seconds``; 0 times exactly ``--runs`` calls, as the protocol did before it
  had a time window).

Printed: each repetition's median latency, the mean of the medians, their coefficient of variation
(stdev / mean of the ``--repeats`` medians) each way, and the ratios before / after of the CV and
of the mean. No assertions: the figures depend on the machine (and on anything else running on
it). The last line is a one-line JSON summary.

Run: ``.venv/bin/python benchmarks/latency_repeatability.py [--repeats 5] [--runs 100]
[--min-seconds 5] [--threads 1] [--fresh-before]``; about 3 minutes on two CPU cores, 4 with
``--fresh-before`` (each ``after`` repetition imports TensorFlow, builds and traces the model in
a fresh process, as the measurement worker does).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from kfnas.config.spec import DEFAULT_MIN_SECONDS
from kfnas.training.measurement import LOCAL_THREADS

ROLES = ("before", "after")
CHILD_ROLES = ("after", "trial", "load")
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


def _demo_model(seed: int) -> tuple[Any, tuple[int, ...]]:
    """The demo's proxy model (architecture and weights from ``seed``) and its input shape."""
    from kfnas.config.settings import demo_spec_yaml
    from kfnas.config.spec import BudgetSpec, parse_spec
    from kfnas.spaces import declared_options, get_space
    from kfnas.tasks import TASKS
    from kfnas.training import seed_everything
    from kfnas.training.runner import build_trial_model, local_trial, trial_experiment_spec

    spec = parse_spec(demo_spec_yaml()).resolved()
    trial = local_trial(spec, "proxy", seed=seed)
    spec = trial_experiment_spec(spec, trial)
    kind = TASKS.get(spec.task.kind)
    options = declared_options(spec.task.kind, [get_space(trial.space)])
    # The task is never trained: its data patterns are only stored, never read.
    task = kind.build_task(spec.task, spec.data, BudgetSpec(**trial.budget), options)
    seed_everything(seed)
    return build_trial_model(spec, trial, task), tuple(kind.input_shape(spec.task))


@contextlib.contextmanager
def _running(pid: int) -> Iterator[None]:
    """Lets the (stopped) load process ``pid`` run while the block runs."""
    os.kill(pid, signal.SIGCONT)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGSTOP)


def _after(args: argparse.Namespace) -> dict[str, Any]:
    """One ``after`` repetition, in this fresh process: prepare, build, ``measure_model``."""
    from kfnas.training.protocol import prepare_measurement

    pinned = prepare_measurement(args.threads)  # first: before TensorFlow runs anything
    from kfnas.tasks.tracing import lighten_process

    lighten_process()  # as the measurement worker does
    from kfnas.training.protocol import measure_model

    start = time.perf_counter()
    model, shape = _demo_model(args.seed)
    build_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = measure_model(
        model, shape, runs=args.runs, threads=args.threads, min_seconds=args.min_seconds
    )
    return {
        "timed_calls": result.record["latency"]["1"]["runs"],
        "median_ms": result.metrics["latency_ms"],
        "p90_ms": result.metrics["latency_p90_ms"],
        "cv_within": result.metrics["latency_cv"],
        "flops": result.metrics["flops"],
        "build_seconds": build_seconds,
        "measure_seconds": time.perf_counter() - start,
        "pinned": pinned,
        **_model_facts(model),
    }


def _trial(args: argparse.Namespace) -> None:
    """The ``before`` trial process: builds the model, then measures it on each stdin line."""
    from kfnas.training.measure import measure_latency, trace_inference

    start = time.perf_counter()
    model, shape = _demo_model(args.seed)
    build_seconds = time.perf_counter() - start
    print(json.dumps({"build_seconds": build_seconds}), flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        concrete = trace_inference(model, shape)  # a fresh function, as each trial traced its own
        with _running(args.load_pid):
            # measure_latency_ms(model, shape, warmup=20, runs=...), its trace done beforehand.
            latency = measure_latency(model, shape, warmup=20, runs=args.runs, concrete=concrete)
        out = {
            "median_ms": latency.median_ms,
            "build_seconds": build_seconds,
            "measure_seconds": time.perf_counter() - start,
            "pinned": False,
            **_model_facts(model),
        }
        print(json.dumps(out), flush=True)


def _model_facts(model: Any) -> dict[str, Any]:
    """The threads TensorFlow runs with, and the weights' count and sum (same model each time)."""
    import tensorflow as tf

    return {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "params": int(sum(int(tf.size(v)) for v in model.variables)),
        "weights_sum": float(sum(float(tf.reduce_sum(tf.abs(v))) for v in model.variables)),
    }


def _load() -> None:
    """A neighbouring trial: trains a small Keras CNN on random images until killed."""
    import numpy as np
    import tf_keras

    model = tf_keras.Sequential(
        [
            tf_keras.layers.Conv2D(32, 3, activation="relu", input_shape=(32, 32, 3)),
            tf_keras.layers.Conv2D(64, 3, activation="relu"),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(10),
        ]
    )
    model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(0).uniform(size=(64, 32, 32, 3)).astype("float32")
    labels = np.arange(64) % 10
    model.train_on_batch(images, labels)
    print("ready", flush=True)
    while True:
        model.train_on_batch(images, labels)


def _child_command(args: argparse.Namespace, role: str, load_pid: int = 0) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--role",
        role,
        "--runs",
        str(args.runs),
        "--threads",
        str(args.threads),
        "--min-seconds",
        str(args.min_seconds),
        "--seed",
        str(args.seed),
        "--load-pid",
        str(load_pid),
    ]


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        env={**os.environ, **CHILD_ENV},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _reply(process: subprocess.Popen, what: str) -> str:
    """The next line ``process`` prints; raises if it died instead."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the {what} process ended (exit code {process.wait()})")
    return line


def _run_after(args: argparse.Namespace) -> dict[str, Any]:
    done = subprocess.run(
        _child_command(args, "after"),
        env={**os.environ, **CHILD_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"an after repetition failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.fmean(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="measurements each way")
    parser.add_argument("--runs", type=int, default=100, help="timed calls per measurement")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=DEFAULT_MIN_SECONDS,
        help="the least seconds an after measurement's timed calls last (0: exactly --runs)",
    )
    parser.add_argument(
        "--threads", type=int, default=LOCAL_THREADS, help="pinned intra-op threads (after)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the architecture and weights")
    parser.add_argument(
        "--fresh-before",
        action="store_true",
        help="measure each before repetition in a new trial process too (about a minute more)",
    )
    parser.add_argument("--role", choices=CHILD_ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--load-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "load":
        _load()
        return
    if args.role == "trial":
        _trial(args)
        return
    if args.role == "after":
        print(json.dumps(_after(args)))
        return

    start = time.perf_counter()
    load = _start([sys.executable, __file__, "--role", "load"])
    trial = _start(_child_command(args, "trial", load.pid))  # both start up at once
    results: dict[str, list[dict[str, Any]]] = {role: [] for role in ROLES}
    try:
        if _reply(load, "load").strip() != "ready":
            raise RuntimeError("the load process did not start")
        os.kill(load.pid, signal.SIGSTOP)  # it runs only while a before measurement does
        _reply(trial, "trial")  # built
        for i in range(args.repeats):
            for role in ROLES if i % 2 == 0 else ROLES[::-1]:
                if role == "before":
                    if args.fresh_before and i > 0:  # a new trial process for each repetition
                        trial.kill()
                        trial.wait()
                        trial = _start(_child_command(args, "trial", load.pid))
                        _reply(trial, "trial")  # built
                    assert trial.stdin is not None
                    trial.stdin.write("measure\n")
                    trial.stdin.flush()
                    out = json.loads(_reply(trial, "trial"))
                else:
                    out = _run_after(args)
                results[role].append(out)
                print(
                    f"repetition {i + 1} {role:>6}: median {out['median_ms']:8.3f} ms "
                    f"(build {out['build_seconds']:.1f} s, measure {out['measure_seconds']:.1f} s, "
                    f"intra-op threads {out['intra_op_threads']})",
                    flush=True,
                )
    finally:
        trial.kill()
        trial.wait()
        os.kill(load.pid, signal.SIGCONT)
        load.kill()
        load.wait()

    medians = {role: [out["median_ms"] for out in results[role]] for role in ROLES}
    means = {role: statistics.fmean(values) for role, values in medians.items()}
    cvs = {role: _cv(values) for role, values in medians.items()}
    same_model = len({(o["params"], round(o["weights_sum"], 3)) for r in ROLES for o in results[r]})
    summary = {
        "repeats": args.repeats,
        "runs": args.runs,
        "min_seconds": args.min_seconds,
        "after_timed_calls": [out["timed_calls"] for out in results["after"]],
        "threads": args.threads,
        "fresh_before": args.fresh_before,
        "params": results["after"][0]["params"],
        "flops": results["after"][0]["flops"],
        "same_model_every_time": same_model == 1,
        "all_after_pinned": all(out["pinned"] for out in results["after"]),
        "before_medians_ms": [round(v, 3) for v in medians["before"]],
        "after_medians_ms": [round(v, 3) for v in medians["after"]],
        "before_mean_ms": round(means["before"], 3),
        "after_mean_ms": round(means["after"], 3),
        "before_cv": round(cvs["before"], 4),
        "after_cv": round(cvs["after"], 4),
        "cv_ratio_before_over_after": round(cvs["before"] / cvs["after"], 2),
        "mean_ratio_before_over_after": round(means["before"] / means["after"], 3),
        "after_p90_ms": [round(out["p90_ms"], 3) for out in results["after"]],
        "after_within_run_cv": [round(out["cv_within"], 4) for out in results["after"]],
        "seconds": round(time.perf_counter() - start, 1),
    }
    print()
    print(f"{'':30}{'before':>12}{'after':>12}")
    for i in range(args.repeats):
        print(
            f"{f'repetition {i + 1} median ms':30}{medians['before'][i]:12.3f}"
            f"{medians['after'][i]:12.3f}"
        )
    print(f"{'mean of the medians, ms':30}{means['before']:12.3f}{means['after']:12.3f}")
    print(f"{'CV of the medians':30}{cvs['before']:12.4f}{cvs['after']:12.4f}")
    print(
        f"ratio before/after: CV {summary['cv_ratio_before_over_after']}, "
        f"mean {summary['mean_ratio_before_over_after']} "
        f"(same model every time: {summary['same_model_every_time']}; "
        f"after pinned to {args.threads} threads: {summary['all_after_pinned']}; "
        f"{summary['seconds']} s in all)"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
