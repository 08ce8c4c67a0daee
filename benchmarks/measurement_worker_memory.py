"""How much memory a long-lived measurement process keeps per model it measures, and its bound.

The local measurement worker (``python -m kfnas.stages.measure_worker --serve``) rebuilds and
measures one model after another in one process. Each variant runs in a fresh process prepared as
the worker is (``prepare_measurement``), which builds ``--models`` of the demo's proxy models
(architectures and weights drawn with seeds 0, 1, ...: ``latency_repeatability._demo_model``),
measures each by the protocol (``measure_model``, ``--runs`` timed calls) and reads its peak
resident memory after each:

* ``kept``: nothing freed between models (the worker before ``release_models``);
* ``released``: ``kfnas.training.measurement.release_models()`` after each, as the worker does.

Printed side by side: the peak after the first model, after the last, and the growth per model
from the second model on (the first one also loads TensorFlow's kernels); then the worker's
bound, the peak after one model plus ``MEASUREMENTS_PER_WORKER`` times the released growth,
since the worker hands over to a fresh process after that many models. No assertions: the
figures depend on the machine. The last line is a one-line JSON summary.

Run: ``.venv/bin/python benchmarks/measurement_worker_memory.py [--models 8] [--runs 20]``;
about 2 minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from kfnas.launch.base import MEASUREMENTS_PER_WORKER
from kfnas.training.measurement import LOCAL_THREADS

VARIANTS = ("kept", "released")
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


def _child(variant: str, models: int, runs: int) -> list[float]:
    """In this fresh process: peak RSS in MB after each model's measurement."""
    from kfnas.training.protocol import prepare_measurement

    prepare_measurement(LOCAL_THREADS)
    sys.path.insert(0, str(Path(__file__).parent))
    from latency_repeatability import _demo_model

    from kfnas.tasks import TASKS
    from kfnas.training.measurement import release_models
    from kfnas.training.protocol import measure_model

    measured_model = TASKS.get("detection").measured_model
    peaks = []
    for seed in range(models):
        model, shape = _demo_model(seed)
        measure_model(measured_model(model), shape, runs=runs, threads=LOCAL_THREADS)
        del model
        if variant == "released":
            release_models()
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return peaks


def _run(variant: str, args: argparse.Namespace) -> list[float]:
    command = [sys.executable, __file__, "--child", variant, "--models", str(args.models)]
    out = subprocess.run(
        [*command, "--runs", str(args.runs)],
        env={**os.environ, **CHILD_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs both variants and prints the comparison; the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8, help="models measured per process")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per model")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.models < 3:
        parser.error(f"--models must be >= 3 (growth is read from model 2 on), got {args.models}")
    if args.child:
        print(json.dumps(_child(args.child, args.models, args.runs)))
        return {}
    peaks = {variant: _run(variant, args) for variant in VARIANTS}
    growth = {v: (p[-1] - p[1]) / (len(p) - 2) for v, p in peaks.items()}
    print(f"{args.models} demo models measured in one process ({args.runs} timed calls each)")
    print(f"{'':32}{'kept':>10}{'released':>10}")
    for label, value in (
        ("peak after model 1, MB", lambda v: peaks[v][0]),
        (f"peak after model {args.models}, MB", lambda v: peaks[v][-1]),
        ("growth per model, MB", lambda v: growth[v]),
    ):
        print(f"{label:32}" + "".join(f"{value(v):10.1f}" for v in VARIANTS))
    bound = peaks["released"][0] + MEASUREMENTS_PER_WORKER * growth["released"]
    print(
        f"ratio kept/released growth: {growth['kept'] / max(growth['released'], 1e-9):.2f}; "
        f"worker bound ({MEASUREMENTS_PER_WORKER} models, then a fresh process): {bound:.0f} MB"
    )
    summary = {
        "models": args.models,
        "runs": args.runs,
        "peaks_mb": {v: [round(x, 1) for x in p] for v, p in peaks.items()},
        "growth_mb_per_model": {v: round(g, 1) for v, g in growth.items()},
        "measurements_per_worker": MEASUREMENTS_PER_WORKER,
        "worker_bound_mb": round(bound),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
