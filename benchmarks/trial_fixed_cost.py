"""A demo-sized proxy trial's time outside its training loop, by phase, before and after issue 15.

Runs the same proxy trial (the demo's spec and proxy budget, the same architecture and seed) three
times in one run, each in a process of its own, and prints their phases side by side:

* ``before``: how a trial ran until issue 15: a fresh interpreter (imports timed), the input
  parsers and the model's layers converted by AutoGraph (``tracing.SKIP_AUTOGRAPH = False``), the
  training step traced twice (its first trace made the optimizer's slots:
  ``_TrialRun.CREATE_OPTIMIZER_VARIABLES = False``), an evaluation through a traced step
  (``Evaluator.EAGER_BATCHES = 0``), Python's garbage collector at its default thresholds and
  every graph op's Python stack recorded (the others call ``tracing.lighten_process`` as the
  trial worker does), tf.data's autotuning model on
  (``trainer.SKIP_DATA_AUTOTUNE_ON_CPU = False``), swish as ``tf.nn.silu`` with its custom
  gradient (``tracing.PLAIN_SWISH_ON_CPU = False``), then latency, FLOPs and
  parameters measured in the trial's own process (``run_trial(measure=True)``). (The detection
  head is built with the model in both: that part of the change adds ~0.2 s to ``before``'s
  build, which it would not have had.)
* ``grappler``: as ``after`` but with Grappler optimizing the CPU trial's graphs
  (``tracing.SKIP_GRAPPLER_ON_CPU = False``), as trials did until stop 37: this column beside
  ``after`` is that change alone, its ``loop`` row says whether the optimized step trained faster.
* ``after``: how it runs now: forked from the local launcher's warm process
  (``kfnas.launch.warm``: the start is the fork's), trained and evaluated only (a small
  validation set eagerly), then measured by the measurement step (``measure_trial``: the model
  rebuilt from the stored checkpoint, FLOPs, parameters and the timed runs), which on a cluster
  runs on the latency device, not in the trial's pod. Here it runs in the trial's own process,
  so with the CPU kernels local trials train with (TensorFlow's own, ``kfnas.launch.warm``): its
  ``latency_ms`` is lower than the local measurement worker's, which keeps oneDNN.

Phases: ``start`` (interpreter and imports, or the fork), ``build`` (task and model), ``setup``
(input pipelines, optimizer, metrics), ``first step`` (tracing the training step), ``loop`` (the
other steps: the training loop), ``evaluation``, ``teardown`` (the final checkpoint),
``measure`` (in the trial: latency, FLOPs, parameters), ``other`` (the task, the lease, uploads,
records), and beside them the measurement step's seconds. The
trial's fixed cost is its whole time minus the loop.

Run: ``.venv/bin/python benchmarks/trial_fixed_cost.py [--repeats N]``; with ``N`` > 1 each mode
runs ``N`` trials, the modes taking turns, and each figure is their median. The last line is a
one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEMO = Path(__file__).resolve().parents[1] / "src" / "kfnas" / "demo.yaml"
MODES = ("before", "grappler", "after")
PHASES = (
    "start",
    "build",
    "setup",
    "first step",
    "loop",
    "evaluation",
    "teardown",
    "measure",
    "other",
)


def _instrument(times: dict[str, float], outcomes: list) -> None:
    """Times the trial's parts by wrapping the functions that do them."""
    from kfnas.training import measurement, runner, trainer

    def timed(module, name, key):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                times[key] = times.get(key, 0.0) + time.perf_counter() - began

        setattr(module, name, wrapper)

    timed(runner, "build_trial_model", "build")
    timed(measurement, "measure_trial_model", "measure")
    original = trainer._TrialRun._outcome

    def keep(self, *args, **kwargs):
        outcome = original(self, *args, **kwargs)
        outcomes.append(outcome)
        return outcome

    trainer._TrialRun._outcome = keep


def _trial(uri: str, mode: str, began: float) -> dict[str, float]:
    """Runs the experiment's proxy trial 1 as ``mode`` does; its phases in seconds."""
    start = time.perf_counter() - began if mode == "before" else time.time() - began
    from kfnas import stages
    from kfnas.training.evaluation import Evaluator

    times: dict[str, float] = {}
    outcomes: list = []
    _instrument(times, outcomes)
    from kfnas.tasks import tracing

    tracing.SKIP_GRAPPLER_ON_CPU = mode == "after"  # the others optimize every graph, as before
    if mode != "before":  # as the trial worker does first; before: Python's defaults, stacks
        tracing.lighten_process()
    else:
        from kfnas.training import trainer
        from kfnas.training.trainer import _TrialRun

        Evaluator.EAGER_BATCHES = 0  # every batch through the traced step, as before
        trainer.SKIP_DATA_AUTOTUNE_ON_CPU = False  # tf.data's autotuning model on, as before
        tracing.SKIP_AUTOGRAPH = False  # parsers and layers converted, as before
        tracing.PLAIN_SWISH_ON_CPU = False  # tf.nn.silu's custom gradient, as before
        _TrialRun.CREATE_OPTIMIZER_VARIABLES = False  # the step traced twice, as before
        start = time.perf_counter() - began  # the imports above count as start-up too
    t0 = time.perf_counter()
    stages.run_trial(uri, "proxy", 1, measure=mode == "before")
    total = time.perf_counter() - t0
    o = outcomes[0]
    phases = {
        "start": start,
        "build": times.get("build", 0.0),
        "setup": o.setup_seconds,
        "first step": o.first_step_seconds,
        "loop": o.train_seconds - o.first_step_seconds,
        "evaluation": o.eval_seconds,
        "teardown": o.teardown_seconds,
        "measure": times.get("measure", 0.0),
    }
    phases["other"] = start + total - sum(phases.values())
    step_s = 0.0
    if mode != "before":
        t1 = time.perf_counter()
        result = stages.measure_trial(uri, "proxy", 1)
        step_s = time.perf_counter() - t1
    else:
        result = stages.run_trial(uri, "proxy", 1)
    return {
        **phases,
        "measurement step": step_s,
        "step traces": o.step_traces,
        "steps": o.steps_done - o.initial_step,
        "latency_ms": result.metrics["latency_ms"],
        "AP": result.metrics["AP"],
    }


def child(mode: str, uri: str, out: str, began: float) -> int:
    """One measured trial (a child process); its phases go to ``out`` as JSON."""
    Path(out).write_text(json.dumps(_trial(uri, mode, began)))
    return 0


def main(argv: list[str]) -> int:
    """The entry of the warm-forked child (``kfnas.launch.warm`` calls ``main(argv)``)."""
    mode, uri, out, began = argv
    return child(mode, uri, out, float(began))


def fresh_trial(
    mode: str, uri: str, out: Path, env: dict[str, str] | None = None
) -> dict[str, float]:
    """``_trial`` in a fresh interpreter (environment ``env``); its figures.

    The child's clock starts at its own start: the interpreter's start-up itself (about 0.1 s)
    is left out, the imports are in.
    """
    clock = "time.perf_counter()" if mode == "before" else "time.time()"  # as ``_trial`` reads
    script = (
        f"import time, sys; began = {clock}; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import trial_fixed_cost as b; sys.exit(b.child({mode!r}, {uri!r}, {str(out)!r}, began))"
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    return json.loads(out.read_text())


def _experiment(root: Path) -> str:
    from kfnas import stages
    from kfnas.data import write_detection_dataset

    files = write_detection_dataset(root / "data", num_train=64, num_validation=16)
    uri = stages.init_experiment(
        DEMO.read_text(),
        [
            f"data.train={files.train_pattern}",
            f"data.validation={files.validation_pattern}",
            f"data.annotations={files.annotations}",
            f"store_root={root / 'store'}",
        ],
    )
    stages.propose_trials(uri, "proxy", 1, n=1)
    return uri


def _medians(trials: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over ``trials`` (one trial: its own figures)."""
    return {key: statistics.median(t[key] for t in trials) for key in trials[0]}


def run() -> None:
    """Runs the trial in each mode, each in its own process, and prints them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="trials per mode, the modes taking turns; each phase is then their median (the "
        "host's speed drifts by 10-40 %% within minutes)",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    from kfnas.launch.warm import prestart, start_warm

    sys.path.insert(0, str(Path(__file__).parent))
    prestart()  # the local launcher's server starts once per search, not per trial
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="kfnas-fixed-cost-") as tmp:
        for repeat in range(args.repeats):
            for mode in MODES:
                root = Path(tmp) / f"{mode}-{repeat}"
                uri = _experiment(root)
                out = root / f"{mode}.json"
                if mode == "before":
                    runs[mode].append(fresh_trial(mode, uri, out))
                    continue
                began = time.time()
                process = start_warm(
                    "trial_fixed_cost",
                    [mode, uri, str(out), repr(began)],
                    root / "log",
                    dict(os.environ),
                )
                if process.wait() != 0:
                    raise SystemExit((root / "log").read_text()[-3000:])
                runs[mode].append(json.loads(out.read_text()))
    results = {mode: _medians(trials) for mode, trials in runs.items()}
    if args.repeats > 1:
        for mode, trials in runs.items():
            each = [sum(r[p] for p in PHASES) - r["loop"] for r in trials]
            print(f"fixed cost of each {mode} trial: " + ", ".join(f"{f:.1f}" for f in each))
    before, after = results["before"], results["after"]
    print(f"{'phase (s)':>18}" + "".join(f"{mode:>10}" for mode in MODES))
    for phase in (*PHASES, "measurement step"):
        print(f"{phase:>18}" + "".join(f"{results[mode][phase]:10.1f}" for mode in MODES))
    fixed = {m: sum(r[p] for p in PHASES) - r["loop"] for m, r in results.items()}
    print(f"{'fixed (not loop)':>18}" + "".join(f"{fixed[mode]:10.1f}" for mode in MODES))
    print(f"{'after / before':>18} {fixed['after'] / fixed['before']:9.2f}")
    print(f"{'after / grappler':>18} {fixed['after'] / fixed['grappler']:9.2f} (fixed cost)")
    loops = after["loop"] / results["grappler"]["loop"]
    print(f"{'after / grappler':>18} {loops:9.2f} (training loop)")
    print(
        "training step traced: "
        + ", ".join(f"{mode} {results[mode]['step traces']}x" for mode in MODES)
    )
    print(
        "latency_ms "
        + ", ".join(f"{mode} {results[mode]['latency_ms']:.2f}" for mode in MODES)
        + "; AP "
        + ", ".join(f"{mode} {results[mode]['AP']:.4f}" for mode in MODES)
    )
    summary = {
        "fixed_before_s": round(fixed["before"], 1),
        "fixed_grappler_s": round(fixed["grappler"], 1),
        "fixed_after_s": round(fixed["after"], 1),
        "measurement_step_s": round(after["measurement step"], 1),
        "ratio": round(fixed["after"] / fixed["before"], 2),
        "loop_after_over_grappler": round(loops, 2),
        "step_traces_before": before["step traces"],
        "step_traces_after": after["step traces"],
        **{
            f"{mode}_{p.replace(' ', '_')}_s": round(results[mode][p], 1)
            for mode in MODES
            for p in PHASES
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    run()
