"""How fast each search algorithm finds the best architecture of a fully evaluated space.

The ground truth is a table the project builds itself (no NAS-Bench download is possible): every
point of a small PyGlove space of NumPy MLPs, ``MLP(depth, width, activation, skip,
learning_rate, weight_decay)`` (``SPACE_CHOICES``: 4 x 4 x 3 x 2 x 5 x 3 = 1440 points), really
trained with NumPy on a fixed generated classification problem and evaluated on its held-out half.

* Data (``make_dataset``): 2048 points of three interleaved spiral arms (one turn, Gaussian noise
  0.08) plus two pure-noise features, rotated by a fixed random orthogonal matrix; the first half
  trains, the second half (1024 points) validates; features standardized with the training
  half's statistics. Everything from ``np.random.default_rng(DATA_SEED)``.
* Training (``train``): float64, fan-in Gaussian init (He gain for relu), 40 epochs of
  mini-batch (64) SGD with momentum 0.9 on softmax cross-entropy, L2 ``weight_decay`` on the
  weight matrices; ``skip`` makes every hidden layer residual (the first through a learned
  linear projection of the input). Every point starts from the same seed (``TRAIN_SEED``), which
  draws its weights and batch order, so a diverging one (a large learning rate) is recorded as
  it ends, not retried.
* Table (``benchmarks/data/search_efficiency_mlp.json``): for each point, in the mixed-radix
  order of its decisions (the first decision most significant), the number of validation points
  classified correctly (``val_correct``, out of ``num_val``) and the parameter count
  (``params``, the cost that multi-objective ``nsga2`` trades against accuracy), plus the
  space, the data and training settings and the dataset's SHA-256. A point's accuracy is looked
  up from its DNA's decisions (``Table.index``).

Rebuild it: ``.venv/bin/python benchmarks/search_efficiency.py --build-table [--jobs 2]
[--table PATH]``. Workers are spawned with one BLAS thread each, so a rebuild on the same NumPy
build is bit-for-bit identical (checked with ``cmp`` against the shipped file; a build took 162 s
with ``--jobs 2`` on two shared cores, 273 s under heavier load); another CPU or BLAS may round
differently and flip a few borderline predictions: the shipped file is the reference.

Each registered algorithm (``ALGORITHMS.names()``; one that fails to import, or to run, is
skipped with a printed note) searches the table two ways, for each of ``--seeds`` study seeds:

* ``controller``: as the search step drives it, through the stateless
  ``kfnas.search.controller.propose(study, history, n, round_index=r)``: ``--parallelism``
  trials first (round 1), then one new trial (a new round) each time one finishes, the finished
  trial's reward in the history and the running ones in it without a result; trials take
  lognormal times (seeded), so they finish in a random order. Stored DNA go through
  ``pg.to_json_str``/``load_dna`` as the store keeps them. (The real step also proposes a trial
  or two ahead while a proposal runs; this leaves that out.)
* ``in-process``: one generator fed one trial at a time (``ALGORITHMS.get(name).create(options,
  seed)``, ``setup``, ``propose``/``feedback``), as a single PyGlove loop would run; a proposal
  that repeats an earlier one is evaluated again and counts as a trial (``dup`` column: the
  controller never repeats a DNA).

The reward is validation accuracy; ``nsga2`` is fed (accuracy, -params / max params) and judged
on accuracy alone (it also spends trials on the cheap end of its front). For each budget N of
``--trials`` it prints the mean over seeds of the best accuracy among the first N trials (in
proposal order: a study with budget N runs exactly these) and the mean regret (table optimum
minus that best, in percentage points), next to the exact expectation for uniform sampling
without replacement; ``opt`` is the fraction of seeds that found the optimum within the largest
N. Options are each algorithm's defaults (``regularized_evolution``: population 20, tournament
5; ``nsga2``: population 10; ``hill_climb``: 1, 1; ...); ``--set name.option=value`` overrides
one (the summary records the complete options that ran). The last line is a one-line JSON summary.

Run: ``.venv/bin/python benchmarks/search_efficiency.py [--seeds 20] [--trials 25 50 100]
[--parallelism 4] [--algorithms random regularized_evolution ...] [--jobs N]``. Each stateless
proposal replays the whole history (up to a second or two at 100 trials for the evolution
algorithms), so a run costs about the square of the largest N: the defaults take about an hour
on two cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import hashlib
import heapq
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyglove as pg

from kfnas.config.spec import AlgorithmSpec, BudgetSpec, StudySpec
from kfnas.search.algorithms import ALGORITHMS
from kfnas.search.controller import HistoryEntry, SpaceExhausted, propose
from kfnas.spaces import SPACES
from kfnas.spaces.base import load_dna

TABLE = Path(__file__).resolve().parent / "data" / "search_efficiency_mlp.json"
SPACE_NAME = "search_efficiency_mlp"
TABLE_FORMAT = 1

#: The decisions of the space, in DNA order, and their candidates.
SPACE_CHOICES: dict[str, list[Any]] = {
    "depth": [1, 2, 3, 4],
    "width": [8, 16, 32, 64],
    "activation": ["relu", "tanh", "sigmoid"],
    "skip": [False, True],
    "learning_rate": [0.003, 0.01, 0.03, 0.1, 0.3],
    "weight_decay": [0.0, 0.0001, 0.001],
}

#: The generated classification problem (``make_dataset``).
DATASET = {
    "seed": 0,
    "points": 2048,
    "classes": 3,
    "turns": 1.0,
    "noise": 0.08,
    "noise_features": 2,
}
#: How every point is trained (``train``).
TRAINING = {"seed": 0, "epochs": 40, "batch_size": 64, "momentum": 0.9, "dtype": "float64"}

BLAS_THREAD_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)


# --- The space ---------------------------------------------------------------------------------


@pg.members(
    [
        ("depth", pg.typing.Int(min_value=1), "Hidden layers."),
        ("width", pg.typing.Int(min_value=1), "Units of every hidden layer."),
        ("activation", pg.typing.Str(), "relu, tanh or sigmoid."),
        ("skip", pg.typing.Bool(), "Residual hidden layers (the first through a projection)."),
        ("learning_rate", pg.typing.Float(min_value=0.0), "SGD learning rate."),
        ("weight_decay", pg.typing.Float(min_value=0.0), "L2 on the weight matrices."),
    ]
)
class MLP(pg.Object):
    """One point of the benchmark space: a small MLP and how it is trained."""


class MLPSpace:
    """The benchmark space, registered for the run (``kfnas.spaces.base.SearchSpace``).

    Plain classes only in this script: the benchmark tests load it without ``sys.modules``, where
    ``dataclasses`` cannot resolve its annotations.
    """

    name = SPACE_NAME
    tasks = ("classification",)

    def hyper(self) -> Any:
        """``MLP`` with a ``pg.oneof`` per decision of ``SPACE_CHOICES``."""
        return MLP(**{key: pg.oneof(values) for key, values in SPACE_CHOICES.items()})

    def reference(self) -> Any | None:
        """None: the space was not built around a published architecture."""
        return None

    def task_problems(self, task: Any) -> list[str]:
        """None: the benchmark never trains through a task."""
        del task
        return []

    def build_network(self, arch: Any, task: Any, input_specs: Any) -> Any:
        """Refused: the points are NumPy MLPs trained by ``train``, not TensorFlow networks."""
        raise NotImplementedError(
            f"{SPACE_NAME} is a benchmark table: its points are trained with NumPy by "
            f"benchmarks/search_efficiency.py --build-table, not built as networks"
        )


SPACE = MLPSpace()


@contextlib.contextmanager
def registered_space() -> Iterator[None]:
    """``SPACE`` registered in ``SPACES`` for the block (left as it was if already there)."""
    added = _ensure_space()
    try:
        yield
    finally:
        if added:
            SPACES.unregister(SPACE_NAME)


def _ensure_space() -> bool:
    if SPACE_NAME in SPACES.names():
        return False
    SPACES.register(SPACE_NAME, SPACE)
    return True


# --- Building the table -------------------------------------------------------------------------


@functools.cache
def make_dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed problem: (x_train, y_train, x_val, y_val); see the module docstring."""
    d = DATASET
    rng = np.random.default_rng(d["seed"])
    n, classes = d["points"], d["classes"]
    y = rng.integers(0, classes, n)
    t = rng.uniform(0.0, 1.0, n)
    radius = 0.15 + 0.85 * t
    angle = 2.0 * np.pi * (d["turns"] * t + y / classes)
    arms = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    arms += rng.normal(0.0, d["noise"], (n, 2))
    x = np.concatenate([arms, rng.normal(0.0, 0.5, (n, d["noise_features"]))], axis=1)
    rotation, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    x = x @ rotation
    half = n // 2
    x = (x - x[:half].mean(axis=0)) / x[:half].std(axis=0)
    return x[:half], y[:half], x[half:], y[half:]


def dataset_sha256() -> str:
    """The SHA-256 of the dataset's arrays (float64 and int64 bytes, in order)."""
    digest = hashlib.sha256()
    for array in make_dataset():
        digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# activation -> (f(z), f'(z) given z and f(z))
ACTIVATIONS = {
    "relu": (_relu, lambda z, a: (z > 0.0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z, a: 1.0 - a * a),
    "sigmoid": (_sigmoid, lambda z, a: a * (1.0 - a)),
}


def train(arch: MLP) -> tuple[int, int]:
    """Trains one point on ``make_dataset``; returns (validation points correct, parameters)."""
    x_train, y_train, x_val, y_val = make_dataset()
    rng = np.random.default_rng(TRAINING["seed"])
    f, df = ACTIVATIONS[arch.activation]
    depth, width, classes = arch.depth, arch.width, DATASET["classes"]
    dims = [x_train.shape[1]] + [width] * depth
    gain = 2.0 if arch.activation == "relu" else 1.0
    weights = [rng.normal(0.0, math.sqrt(gain / dims[i]), (dims[i], width)) for i in range(depth)]
    biases = [np.zeros(width) for _ in range(depth)]
    out_w = rng.normal(0.0, math.sqrt(1.0 / width), (width, classes))
    out_b = np.zeros(classes)
    projection = rng.normal(0.0, math.sqrt(1.0 / dims[0]), (dims[0], width)) if arch.skip else None
    params = [*weights, *biases, out_w, out_b] + ([projection] if arch.skip else [])
    velocity = [np.zeros_like(p) for p in params]

    def forward(x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        inputs, pre, post = [x], [], []
        h = x
        for i in range(depth):
            z = h @ weights[i] + biases[i]
            a = f(z)
            out = a
            if arch.skip:
                out = a + (h @ projection if i == 0 else h)
            pre.append(z)
            post.append(a)
            inputs.append(out)
            h = out
        return inputs, pre, post

    lr, decay, momentum = arch.learning_rate, arch.weight_decay, TRAINING["momentum"]
    batch, n = TRAINING["batch_size"], len(x_train)
    with np.errstate(all="ignore"):  # A diverging run (NaN) is recorded as it ends.
        for _ in range(TRAINING["epochs"]):
            order = rng.permutation(n)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                inputs, pre, post = forward(x_train[idx])
                logits = inputs[-1] @ out_w + out_b
                logits -= logits.max(axis=1, keepdims=True)
                prob = np.exp(logits)
                prob /= prob.sum(axis=1, keepdims=True)
                prob[np.arange(len(idx)), y_train[idx]] -= 1.0
                g = prob / len(idx)
                grad_out_w, grad_out_b = inputs[-1].T @ g, g.sum(axis=0)
                gh = g @ out_w.T
                grad_w: list[Any] = [None] * depth
                grad_b: list[Any] = [None] * depth
                grad_projection = None
                for i in reversed(range(depth)):
                    gz = gh * df(pre[i], post[i])
                    grad_w[i], grad_b[i] = inputs[i].T @ gz, gz.sum(axis=0)
                    below = gz @ weights[i].T
                    if arch.skip:
                        if i == 0:
                            grad_projection = inputs[0].T @ gh
                        else:
                            below = below + gh
                    gh = below
                grads = [*grad_w, *grad_b, grad_out_w, grad_out_b]
                if arch.skip:
                    grads.append(grad_projection)
                for p, grad, v in zip(params, grads, velocity, strict=True):
                    if p.ndim == 2:
                        grad = grad + decay * p
                    v *= momentum
                    v += grad
                    p -= lr * v
        inputs, _, _ = forward(x_val)
        predicted = np.argmax(inputs[-1] @ out_w + out_b, axis=1)
    return int((predicted == y_val).sum()), int(sum(p.size for p in params))


def space_size() -> int:
    return math.prod(len(values) for values in SPACE_CHOICES.values())


def point_numbers(index: int) -> list[int]:
    """The decisions (candidate indices) of table row ``index`` (mixed radix, first slowest)."""
    numbers = []
    for values in reversed(list(SPACE_CHOICES.values())):
        index, digit = divmod(index, len(values))
        numbers.append(digit)
    return numbers[::-1]


def train_point(index: int) -> tuple[int, int]:
    """Materializes table row ``index`` from the PyGlove space and trains it."""
    hyper = SPACE.hyper()
    dna = pg.DNA.from_numbers(point_numbers(index), pg.dna_spec(hyper))
    return train(pg.materialize(hyper, dna))


def build_table(path: Path, jobs: int) -> dict[str, Any]:
    """Trains every point (``jobs`` spawned one-BLAS-thread workers) and writes the table."""
    for variable in BLAS_THREAD_VARIABLES:  # inherited by the spawned workers
        os.environ[variable] = "1"
    size = space_size()
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        rows = list(pool.map(train_point, range(size), chunksize=8))
    seconds = time.perf_counter() - start
    table = {
        "format": TABLE_FORMAT,
        "description": (
            "Every point of the search_efficiency MLP space trained with NumPy on a generated "
            "spiral problem; built by benchmarks/search_efficiency.py --build-table"
        ),
        "space": SPACE_CHOICES,
        "order": "mixed radix over space, first decision most significant",
        "dataset": {**DATASET, "sha256": dataset_sha256()},
        "training": TRAINING,
        "num_val": len(make_dataset()[3]),
        "val_correct": [correct for correct, _ in rows],
        "params": [params for _, params in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    print(f"trained {size} points in {seconds:.1f} s with {jobs} worker(s); wrote {path}")
    return table


# --- Reading the table --------------------------------------------------------------------------


class Table:
    """The ground truth: validation accuracy and parameter count per point of the space."""

    def __init__(self, accuracy: Sequence[float], params: Sequence[int], radix: Sequence[int]):
        self.accuracy = tuple(accuracy)
        self.params = tuple(params)
        self.radix = tuple(radix)

    @property
    def optimum(self) -> float:
        """The best validation accuracy of the space."""
        return max(self.accuracy)

    def index(self, dna: pg.DNA) -> int:
        """The table row of a DNA of the space, from its decisions."""
        index = 0
        for digit, base in zip(dna.to_numbers(), self.radix, strict=True):
            index = index * base + digit
        return index

    def point(self, index: int) -> dict[str, Any]:
        """Table row ``index`` as ``{decision: chosen value}``."""
        numbers = point_numbers(index)
        return {
            key: values[digit]
            for (key, values), digit in zip(SPACE_CHOICES.items(), numbers, strict=True)
        }


def load_table(path: Path = TABLE) -> Table:
    """Reads a table, refusing one built for another space (rebuild with ``--build-table``)."""
    data = json.loads(path.read_text())
    if data.get("format") != TABLE_FORMAT or data.get("space") != SPACE_CHOICES:
        raise ValueError(
            f"{path} was built for another space or format: rebuild it with "
            f"benchmarks/search_efficiency.py --build-table"
        )
    spec = pg.dna_spec(SPACE.hyper())
    assert [str(point.id) for point in spec.decision_points] == list(SPACE_CHOICES)
    num_val = data["num_val"]
    return Table(
        accuracy=tuple(correct / num_val for correct in data["val_correct"]),
        params=tuple(data["params"]),
        radix=tuple(len(values) for values in SPACE_CHOICES.values()),
    )


def expected_uniform_best(accuracy: Sequence[float], n: int) -> float:
    """E[max accuracy of n points drawn uniformly without replacement], exactly."""
    ordered = sorted(accuracy)
    total = math.comb(len(ordered), n)
    return sum(
        value * (math.comb(k, n) - math.comb(k - 1, n)) / total
        for k, value in enumerate(ordered, start=1)
        if k >= n
    )


# --- Searching it -------------------------------------------------------------------------------


def _objectives(table: Table, index: int) -> tuple[float, float]:
    return table.accuracy[index], -table.params[index] / max(table.params)


def run_controller(
    name: str, options: dict[str, Any], seed: int, trials: int, parallelism: int, table: Table
) -> list[float]:
    """Accuracy of each trial, in proposal order, of a stateless run with ``parallelism`` slots."""
    multi = ALGORITHMS.get(name).multi_objective
    study = StudySpec(
        space=SPACE_NAME,
        algorithm=AlgorithmSpec(name=name, options=dict(options)),
        budget=BudgetSpec(rounds=trials, trials_per_round=1),
        seed=seed,
    )
    clock = random.Random(f"durations:{seed}")
    history: list[HistoryEntry] = []
    rows: list[int] = []
    running: list[tuple[float, int]] = []  # (end time, trial index)
    now, round_index = 0.0, 0

    def launch(n: int) -> bool:
        nonlocal round_index
        round_index += 1
        try:
            batch = propose(study, history, n, round_index=round_index)
        except SpaceExhausted:
            return False
        for dna in batch:
            stored = load_dna(pg.to_json_str(dna))  # as the store keeps it
            history.append(HistoryEntry(stored, round_index))
            rows.append(table.index(stored))
            heapq.heappush(running, (now + clock.lognormvariate(0.0, 0.5), len(history) - 1))
        return True

    launch(min(parallelism, trials))
    while len(history) < trials and running:
        now, done = heapq.heappop(running)
        entry = history[done]
        value = _objectives(table, rows[done])
        history[done] = HistoryEntry(entry.dna, entry.round, value[0], value if multi else None)
        if not launch(1):
            break
    return [table.accuracy[row] for row in rows]


def run_in_process(
    name: str, options: dict[str, Any], seed: int, trials: int, table: Table
) -> tuple[list[float], int]:
    """Accuracy of each trial of one in-process generator, and how many repeated a DNA."""
    algorithm = ALGORITHMS.get(name)
    generator = algorithm.create(options, seed)
    generator.setup(pg.dna_spec(SPACE.hyper()))
    seen: set[int] = set()
    out, repeats = [], 0
    for _ in range(trials):
        try:
            dna = generator.propose()
        except StopIteration:
            break
        row = table.index(dna)
        repeats += row in seen
        seen.add(row)
        value = _objectives(table, row)
        generator.feedback(dna, value if algorithm.multi_objective else value[0])
        out.append(value[0])
    return out, repeats


def run_seed(
    name: str, options: dict[str, Any], seed: int, args: argparse.Namespace, table_path: str
) -> dict[str, Any]:
    """Both runs of one algorithm and seed (also the unit of work of ``--jobs``)."""
    _ensure_space()
    table = load_table(Path(table_path))
    trials = max(args.trials)
    controller = run_controller(name, options, seed, trials, args.parallelism, table)
    in_process, repeats = run_in_process(name, options, seed, trials, table)
    return {"controller": controller, "in_process": in_process, "repeats": repeats}


def _best_after(rewards: Sequence[float], n: int) -> float:
    return max(rewards[:n]) if rewards else 0.0


def _option_overrides(items: Sequence[str], parser: argparse.ArgumentParser) -> dict:
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, text = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot:
            parser.error(f"--set {item!r}: write algorithm.option=value")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides.setdefault(name, {})[key] = value
    return overrides


def _algorithms(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    usable, skipped = [], {}
    for name in names:
        try:
            ALGORITHMS.get(name)
        except ImportError as e:
            skipped[name] = f"does not import: {e}"
            print(f"note: skipping {name}: it does not import ({e})")
            continue
        usable.append(name)
    return usable, skipped


def summarize(
    name: str, options: dict, runs: list[dict[str, Any]], args: argparse.Namespace, optimum: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"algorithm": name, "options": options}
    for mode in ("controller", "in_process"):
        best = [[_best_after(run[mode], n) for run in runs] for n in args.trials]
        row[mode] = {
            "mean_best": [round(statistics.fmean(b), 6) for b in best],
            "mean_regret": [round(statistics.fmean(optimum - v for v in b), 6) for b in best],
            "regret_sem": [
                round(statistics.stdev(b) / math.sqrt(len(b)), 6) if len(b) > 1 else 0.0
                for b in best
            ],
            "found_optimum": round(statistics.fmean(v >= optimum for v in best[-1]), 4),
        }
    total = sum(len(run["in_process"]) for run in runs)
    row["in_process"]["repeated_fraction"] = round(
        sum(run["repeats"] for run in runs) / max(total, 1), 4
    )
    return row


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Searches the table with every algorithm, prints the comparison; returns the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="study seeds 0..S-1 (default 20)")
    parser.add_argument(
        "--trials", type=int, nargs="+", default=[25, 50, 100], help="budgets N (25 50 100)"
    )
    parser.add_argument("--parallelism", type=int, default=4, help="controller slots (default 4)")
    parser.add_argument(
        "--algorithms", nargs="+", default=None, help="default: every registered algorithm"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ALGORITHM.OPTION=VALUE",
        help="override one algorithm option (value read as JSON), e.g. "
        "regularized_evolution.population_size=10",
    )
    parser.add_argument("--table", type=Path, default=TABLE, help="the table file")
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes, spawned (default: one per CPU); results do not depend on it",
    )
    parser.add_argument(
        "--build-table", action="store_true", help="train every point, write --table and stop"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.build_table:
        table = build_table(args.table, args.jobs)
        summary = {
            "table": str(args.table),
            "points": len(table["val_correct"]),
            "optimum": max(table["val_correct"]) / table["num_val"],
        }
        print(json.dumps(summary))
        return summary
    args.trials = sorted(set(args.trials))
    if args.seeds < 1 or args.parallelism < 1 or args.trials[0] < 1:
        parser.error("--seeds, --parallelism and --trials must be at least 1")
    overrides = _option_overrides(args.set, parser)
    table = load_table(args.table)
    optimum = table.optimum
    if args.trials[-1] > len(table.accuracy):
        parser.error(f"--trials must not exceed the {len(table.accuracy)} points of the space")
    names, skipped = _algorithms(args.algorithms or ALGORITHMS.names())
    best_point = table.point(table.accuracy.index(optimum))
    print(
        f"{SPACE_NAME}: {len(table.accuracy)} points fully trained ({args.table.name}); "
        f"optimum {optimum:.2%} validation accuracy at {best_point}, {len(table.accuracy)} "
        f"points' median {statistics.median(table.accuracy):.2%}; {args.seeds} seeds; "
        f"controller: {args.parallelism} slots, one new trial per finished one"
    )
    start = time.perf_counter()
    rows = []
    with registered_space():
        work = {
            (name, seed): (name, dict(overrides.get(name, {})), seed, args, str(args.table))
            for name in names
            for seed in range(args.seeds)
        }
        results: dict[tuple[str, int], Any] = {}
        if args.jobs == 1:
            for key, job in work.items():
                results[key] = _attempt(job)
        else:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
                futures = {key: pool.submit(_attempt, job) for key, job in work.items()}
                results = {key: future.result() for key, future in futures.items()}
        for name in names:
            runs = [results[(name, seed)] for seed in range(args.seeds)]
            errors = [run for run in runs if isinstance(run, str)]
            if errors:
                skipped[name] = f"failed: {errors[0]}"
                print(f"note: skipping {name}: it failed ({errors[0]})")
                continue
            options = ALGORITHMS.get(name).complete(overrides.get(name, {}))
            rows.append(summarize(name, options, runs, args, optimum))
    seconds = time.perf_counter() - start
    uniform = [expected_uniform_best(table.accuracy, n) for n in args.trials]
    _print_table(rows, uniform, optimum, args)
    summary = {
        "space": SPACE_NAME,
        "table": args.table.name,
        "points": len(table.accuracy),
        "optimum": optimum,
        "seeds": args.seeds,
        "trials": args.trials,
        "parallelism": args.parallelism,
        "uniform_expected_best": [round(value, 6) for value in uniform],
        "algorithms": rows,
        "skipped": skipped,
        "seconds": round(seconds, 1),
    }
    print(json.dumps(summary))
    return summary


def _attempt(job: tuple) -> dict[str, Any] | str:
    """``run_seed(*job)``, or the error's text: a failing algorithm is skipped, not fatal."""
    try:
        return run_seed(*job)
    except Exception as e:  # reported and skipped: see the module docstring
        return f"{type(e).__name__}: {e}"


def _print_table(
    rows: list[dict], uniform: list[float], optimum: float, args: argparse.Namespace
) -> None:
    budgets = args.trials
    best_title, regret_title = "mean best val acc (%)", "mean regret (pp)"
    width = max(8 * len(budgets), len(best_title) + 1)

    def group(values: Sequence[float]) -> str:
        return "".join(f"{100 * v:>8.2f}" for v in values).rjust(width)

    print(f"{'':<34}{best_title:>{width}}  {regret_title:>{width}}{'opt':>6}{'dup':>6}")
    labels = "".join(f"{'@' + str(n):>8}" for n in budgets).rjust(width)
    print(f"{'algorithm':<22}{'mode':<12}{labels}  {labels}{'@' + str(budgets[-1]):>6}")
    for row in rows:
        for mode, label in (("controller", "controller"), ("in_process", "in-process")):
            figures = row[mode]
            dup = f"{figures['repeated_fraction']:>6.0%}" if mode == "in_process" else ""
            print(
                f"{row['algorithm'] if mode == 'controller' else '':<22}{label:<12}"
                f"{group(figures['mean_best'])}  {group(figures['mean_regret'])}"
                f"{figures['found_optimum']:>6.0%}{dup}"
            )
    regrets = [optimum - v for v in uniform]
    print(f"{'uniform (exact E)':<22}{'-':<12}{group(uniform)}  {group(regrets)}")
    print(
        "best: mean over seeds of the best validation accuracy in the first N trials; regret: "
        "optimum minus it, percentage points; opt: seeds that found the optimum; dup: in-process "
        "proposals repeating an earlier DNA (evaluated again, counted as trials); uniform: exact "
        "expectation for N points drawn uniformly without replacement"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
