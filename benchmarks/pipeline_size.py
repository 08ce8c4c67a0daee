"""How the compiled search pipeline grows with the rounds of the search: tasks, executors, bytes.

Compiles the search pipeline with ``kfnas.pipelines.compile.compile_pipeline`` once per round
count (``--rounds``, default 2 10 100 1000) with one profile (``--profile``, default ``gke-gpu``),
``--trials`` trials per round, ``--parallelism`` and ``--top-k``, and prints for each:

* tasks: every task of the compiled IR, those of the root DAG (``root.dag.tasks``) and of every
  sub-DAG (``components.<component>.dag.tasks``);
* executors: ``deploymentSpec.executors``;
* bytes: the size of the YAML file (pipeline spec and platform spec together);
* the compile time (for information; nothing is asserted on it);

then the ratio of the largest to the smallest size, for each figure. The design goal is 1.0:
the search controller runs each searched study as one step, so the pipeline does not grow with
rounds (``pipelines/search.py``). For scale it prints Kubernetes' limit on one stored object
(etcd's request limit, 1.5 MiB): a run's Argo Workflow (the IR expanded, plus its status) must fit
in it.

Run: ``.venv/bin/python benchmarks/pipeline_size.py [--rounds 2 10 100 1000] [--profile gke-gpu]``.
A design whose DAG unrolls rounds takes minutes to compile 1000 rounds; pass fewer
(``--rounds 2 10``) to measure one. The last line is a one-line JSON summary.

To count another figure: compute it in ``measure`` and add its column.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kfnas.pipelines.compile import compile_pipeline

#: Kubernetes' limit on one object in etcd (its default request size limit), in bytes.
ETCD_OBJECT_LIMIT = int(1.5 * 1024 * 1024)


def measure(path: Path) -> dict[str, int]:
    """The task and executor counts and the byte size of a compiled pipeline YAML file.

    Raises:
        ValueError: The file holds no pipeline spec (no document with a ``root``).
    """
    text = path.read_text()
    specs = [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and "root" in doc]
    if not specs:
        raise ValueError(
            f"{path} holds no KFP pipeline spec (no YAML document with a 'root' key): was it "
            f"written by compile_pipeline?"
        )
    spec = specs[0]
    tasks = len(spec["root"].get("dag", {}).get("tasks", {}))
    for component in spec.get("components", {}).values():
        tasks += len(component.get("dag", {}).get("tasks", {}))
    executors = len(spec.get("deploymentSpec", {}).get("executors", {}))
    return {"tasks": tasks, "executors": executors, "bytes": len(text.encode())}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Compiles the pipeline for each round count and prints its size; returns the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, nargs="+", default=[2, 10, 100, 1000], help="round counts"
    )
    parser.add_argument("--profile", default="gke-gpu", help="cluster profile (default gke-gpu)")
    parser.add_argument("--trials", type=int, default=20, help="trials per round (default 20)")
    parser.add_argument("--parallelism", type=int, default=20, help="trials at once (default 20)")
    parser.add_argument("--top-k", type=int, default=3, help="trials trained fully (default 3)")
    args = parser.parse_args(argv)

    print(
        f"search pipeline, profile {args.profile}, {args.trials} trials per round, "
        f"parallelism {args.parallelism}, top k {args.top_k}"
    )
    print(f"{'rounds':>8}{'tasks':>8}{'executors':>11}{'bytes':>12}{'compile s':>11}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kfnas-size-") as tmp:
        for rounds in args.rounds:
            path = Path(tmp) / f"search-{rounds}.yaml"
            start = time.perf_counter()
            compile_pipeline(args.profile, rounds, args.trials, args.parallelism, args.top_k, path)
            seconds = time.perf_counter() - start
            row = {"rounds": rounds, **measure(path), "compile_s": round(seconds, 2)}
            rows.append(row)
            print(
                f"{rounds:>8}{row['tasks']:>8}{row['executors']:>11}{row['bytes']:>12,}"
                f"{seconds:>11.2f}"
            )
    growth = {
        key: round(max(r[key] for r in rows) / min(r[key] for r in rows), 4)
        for key in ("tasks", "executors", "bytes")
    }
    print(
        "largest / smallest: "
        + ", ".join(f"{key} {ratio:g}" for key, ratio in growth.items())
        + " (goal 1.0: the pipeline does not grow with rounds)"
    )
    largest = max(r["bytes"] for r in rows)
    print(
        f"Kubernetes (etcd) object limit: {ETCD_OBJECT_LIMIT:,} bytes (1.5 MiB); the largest "
        f"pipeline is {largest / ETCD_OBJECT_LIMIT:.1%} of it"
    )
    summary = {
        "profile": args.profile,
        "trials_per_round": args.trials,
        "parallelism": args.parallelism,
        "top_k": args.top_k,
        "sizes": rows,
        "growth": growth,
        "etcd_object_limit_bytes": ETCD_OBJECT_LIMIT,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
