"""What statelessness costs: time to propose a round as a study's history grows.

The controller rebuilds its algorithm from the stored history on every ``propose`` call (so trial
pods never talk to a live controller and a resubmitted pipeline resumes). This prints, side by side
in one run, the seconds one stateless ``propose`` of a round takes after H stored trials and the
seconds an in-process generator that was fed the same trials one by one takes for the same round,
and their ratio, for each algorithm on the real ``spinenet_mbconv`` space.

Run: ``.venv/bin/python benchmarks/propose_replay.py [--sizes 0 50 200] [--round-size 8]``.
Rewards are a deterministic function of the DNA, so no training is involved.
"""

from __future__ import annotations

import argparse
import json
import time

import pyglove as pg

from kfnas.config.spec import AlgorithmSpec, BudgetSpec, StudySpec
from kfnas.search.algorithms import ALGORITHMS
from kfnas.search.controller import HistoryEntry, propose
from kfnas.spaces import get_space
from kfnas.spaces.base import dna_spec

SPACE = "spinenet_mbconv"


def reward_of(dna: pg.DNA) -> tuple[float, float]:
    """A deterministic stand-in for (accuracy, -latency) computed from the decisions."""
    numbers = dna.to_numbers()
    return (sum(numbers) % 97 / 97.0, -float(sum(numbers[::3]) % 13 + 1))


def build_history(name: str, size: int, round_size: int) -> list[HistoryEntry]:
    """A history of ``size`` trials proposed and fed back by one in-process generator."""
    algorithm = ALGORITHMS.get(name)
    generator = algorithm.create({}, seed=1)
    generator.setup(dna_spec(get_space(SPACE)))
    history = []
    for i in range(size):
        dna = generator.propose()
        value = reward_of(dna)
        feedback = value if algorithm.multi_objective else value[0]
        generator.feedback(dna, feedback)
        stored = pg.from_json_str(pg.to_json_str(dna))  # as the store keeps it
        round_index = i // round_size + 1
        history.append(HistoryEntry(stored, round_index, value[0], value))
    return history


def time_stateless(name: str, history: list[HistoryEntry], round_size: int) -> float:
    study = StudySpec(SPACE, AlgorithmSpec(name), BudgetSpec(trials_per_round=round_size), seed=1)
    next_round = (history[-1].round + 1) if history else 1
    start = time.perf_counter()
    propose(study, history, round_size, round_index=next_round)
    return time.perf_counter() - start


def time_in_process(name: str, size: int, round_size: int) -> float:
    algorithm = ALGORITHMS.get(name)
    generator = algorithm.create({}, seed=1)
    generator.setup(dna_spec(get_space(SPACE)))
    for _ in range(size):
        dna = generator.propose()
        value = reward_of(dna)
        generator.feedback(dna, value if algorithm.multi_objective else value[0])
    start = time.perf_counter()
    for _ in range(round_size):
        generator.propose()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 50, 200])
    parser.add_argument("--round-size", type=int, default=8)
    parser.add_argument(
        "--algorithms", nargs="+", default=[n for n in ALGORITHMS.names() if n != "grid"]
    )
    args = parser.parse_args()
    rows = []
    print(f"{'algorithm':<22}{'history':>8}{'stateless s':>13}{'in-process s':>14}{'ratio':>8}")
    for name in args.algorithms:
        for size in args.sizes:
            history = build_history(name, size, args.round_size)
            stateless = time_stateless(name, history, args.round_size)
            in_process = time_in_process(name, size, args.round_size)
            ratio = stateless / in_process if in_process else float("inf")
            rows.append(
                {
                    "algorithm": name,
                    "history": size,
                    "stateless_s": stateless,
                    "in_process_s": in_process,
                    "ratio": ratio,
                }
            )
            print(f"{name:<22}{size:>8}{stateless:>13.3f}{in_process:>14.4f}{ratio:>8.1f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
