"""``local_search``: first-improvement local search with random restarts, rebuilt from the history.

As in White et al. 2020 ("Local search is state of the art for neural architecture search
benchmarks", arXiv:2005.02960): start from a random architecture; propose the neighbours of the
current point (every architecture one decision away) in a random order; as soon as a neighbour
beats the current point, move there and try its neighbours; when every neighbour of the current
point has been tried without improvement (a local optimum), restart from a new random point.

The neighbourhood of a point is walked over the ``DNASpec``'s decision points (categorical
decisions only: ``pg.oneof`` and ``pg.manyof``; ``setup`` refuses float and custom ones):

* Each other candidate of each active decision is one neighbour. Conditional decisions are
  handled: changing a choice deactivates the decisions under its old candidate and activates those
  under the new one, which take values drawn at random (seeded by the point and the change, so a
  point always has the same neighbours).
* A ``pg.manyof`` keeps its constraints: with ``choices_distinct`` a subchoice cannot take a
  sibling's candidate, with ``choices_sorted`` it stays between its siblings. A distinct, unsorted
  ``pg.manyof`` (an ordering, e.g. SpineNet's block levels, where no single change is valid) also
  has the swaps of two of its subchoices as neighbours: the smallest change that keeps it valid.
* The order of the neighbourhood is a shuffle seeded by the study seed and the point, drawn one
  neighbour at a time (a point left after a few tries costs a few draws).

State, and statelessness. Everything is a function of the history, replayed in proposal order
(PyGlove's ``recover``), each trial's reward taken at its place in that order:

* Every trial counts as proposed, pending (unfinished) and failed ones included: neither a
  neighbour nor a random point is ever proposed twice.
* The current point moves to an evaluated trial whose reward exceeds its own by more than
  ``min_improvement`` (the first evaluated trial of a climb becomes it anyway): with the default
  0, it is the best architecture evaluated since the last restart. A failed or unfinished trial
  (reward None) and a non-finite reward carry no information: they move nothing.
* A restart happens as soon as every neighbour of the current point has been proposed (it was not
  moved away from, so none improved on it): the current point is dropped, and the next evaluated
  trial starts a new climb. Until one has been evaluated, the proposals are random points.
* The first ``initial_random`` proposals of a study are random points; the climb starts from the
  best of them (White et al. start from one).

Proposing runs the same transitions with the rewards still unknown: a round proposes the untried
neighbours of the current point, and if it uses up the neighbourhood, random restart points fill
it. When the next round replays the history, the round's rewards are known: if one of those
neighbours improved after all, the climb goes on from it and the restart points are merely extra
samples. So a stateless run proposes what one uninterrupted generator would, had it been told each
reward right after proposing it (with one trial per round, exactly that); with the rewards of a
round arriving together, the path differs but is a deterministic function of the seed and the
history.

Options (``LOCAL_SEARCH.options`` has the defaults): ``initial_random`` (1), the random points the
study starts with, and ``min_improvement`` (0.0), the reward margin a trial needs to become the
current point (raise it to the noise of the reward so that the climb does not follow noise);
``LOCAL_SEARCH.checks`` refuses a negative or non-finite margin.

Randomness: a random point is drawn from ``random.Random(derive_seed(seed, "random", i))`` where
``i`` is the proposal's index in the study, and a neighbourhood's order and fills from seeds
derived from the point. ``recover`` restores the proposal count, so replaying the history restores
every random choice: the algorithm needs no per-round seed (``seed_per_round=False``), and a fixed
study seed keeps a point's neighbourhood order the same from round to round (a per-round seed would
reshuffle it every round and make ``snapshot_state`` depend on the round).

Replay cost: each trial's decisions are read from its stored text (``recover_decisions``: no DNA
is built) and keyed by a Zobrist hash (an XOR of one 64-bit constant per decision value), so a
neighbour's key costs one XOR per changed decision; only proposals are built as DNA, once each.
``snapshot_state``/``restore_state`` hold all of the above (the proposed set as 64-bit hashes) so
a caller can skip the replay entirely.

To extend (e.g. best-improvement instead of first-improvement, or another neighbourhood in
``_walk``): keep the state in ``_State`` and change it only in proposal order, through a proposal
(``_propose``, ``_replay``), a reward (``_evaluate``) and the restart check (``_settle``), in the
same sequence whether the trial is proposed or replayed; draw random values only from seeds
derived from the study seed and the proposal index or the point; and keep ``snapshot_state``
covering ``_State``, bumping ``STATE_VERSION`` when its layout changes.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyglove as pg

from kfnas.search.algorithms import Algorithm, check_own_state, derive_seed
from kfnas.search.sampling import dna_decisions, dna_from_numbers

__all__ = ["LOCAL_SEARCH", "LocalSearchGenerator"]

# How many random points a proposal draws to find one not proposed before; after that it returns
# a repeat, which the controller drops (and replaces by its own random draws if it keeps coming).
_MAX_RANDOM_DRAWS = 100

# A neighbour: the (decision index, new candidate) pairs that turn the current point into it.
Move = tuple[tuple[int, int], ...]
# Which decisions of a distinct or sorted ``pg.manyof`` a subchoice belongs to, in order.
Group = tuple[tuple[int, ...], bool, bool]


@dataclasses.dataclass(slots=True)
class _State:
    """What ``recover`` rebuilds (a plain object: attribute access on a ``pg.Object`` is slow).

    Attributes:
        proposed: The Zobrist keys of every proposed point.
        current: The current point (value per decision point, -1 where inactive), or None.
        current_key: Its key.
        current_reward: Its reward.
        best: The best point evaluated so far, or None.
        best_reward: Its reward.
        moves: How many times the current point moved to a better one.
        restarts: How many local optima were left.
        walk: The walk through the current point's neighbourhood (None until needed).
        neighbour: The walk's latest neighbour (key and point): the first one not proposed when
            it was last looked at.
    """

    proposed: set[int] = dataclasses.field(default_factory=set)
    current: list[int] | None = None
    current_key: int = 0
    current_reward: float = 0.0
    best: list[int] | None = None
    best_reward: float = 0.0
    moves: int = 0
    restarts: int = 0
    walk: _Walk | None = None
    neighbour: tuple[int, list[int]] | None = None

    def reset_neighbourhood(self) -> None:
        """Forgets the neighbourhood walk (the current point changed)."""
        self.walk, self.neighbour = None, None


class _Walk:
    """A point's neighbours in a seeded random order, drawn one at a time.

    The neighbourhood is a list of segments (one per active decision: its other allowed
    candidates; one per distinct, unsorted ``pg.manyof``: its swaps), indexed without being built.
    The order is a Fisher-Yates shuffle drawn from the front, so a point that is left after a few
    neighbours costs a few draws, not a shuffle of its whole neighbourhood.
    """

    __slots__ = ("_drawn", "_ends", "_point", "_rng", "_segments", "_swapped", "size")

    def __init__(
        self,
        point: Sequence[int],
        segments: list[tuple[Any, int, Sequence[Any] | None]],
        ends: list[int],
        rng: random.Random,
    ) -> None:
        self._point = point
        self._segments = segments
        self._ends = ends
        self._rng = rng
        self._swapped: dict[int, int] = {}
        self._drawn = 0
        self.size = ends[-1] if ends else 0

    def next_move(self) -> Move | None:
        """The next neighbour in the order, as a move; None once all were drawn."""
        i, size = self._drawn, self.size
        if i >= size:
            return None
        j = self._rng.randrange(i, size)
        swapped = self._swapped
        index = swapped.get(j, j)
        swapped[j] = swapped.pop(i, i)
        self._drawn = i + 1
        return self._move(index)

    def _move(self, index: int) -> Move:
        s = bisect.bisect_right(self._ends, index)
        offset = index - (self._ends[s - 1] if s else 0)
        where, value, choices = self._segments[s]
        if isinstance(where, int):  # Decision ``where`` takes another candidate.
            if choices is None:  # Any other than its value.
                return ((where, offset + (offset >= value)),)
            return ((where, choices[offset]),)
        a, b = choices[offset]  # Subchoices a and b of the pg.manyof ``where`` swap values.
        point = self._point
        return ((where[a], point[where[b]]), (where[b], point[where[a]]))


@pg.members(
    [
        ("seed", pg.typing.Int(), "Seed of every random choice."),
        ("initial_random", pg.typing.Int(min_value=1), "Random points the study starts with."),
        (
            "min_improvement",
            pg.typing.Float(min_value=0.0),
            "How much a reward must exceed the current point's to move there.",
        ),
    ]
)
class LocalSearchGenerator(pg.DNAGenerator):
    """Local search with random restarts over categorical decisions (see the module doc).

    Build it with ``LOCAL_SEARCH.create(options, seed)`` (or directly with every member), then
    ``setup(dna_spec)`` and ``recover(history)`` or ``restore_state(snapshot)``.
    """

    STATE_VERSION = 1
    """The layout version of ``snapshot_state``; ``restore_state`` refuses any other."""

    def _setup(self) -> None:
        """Indexes the spec's decision points (tree, constraints, hash constants); empty state."""
        points = list(self.dna_spec.decision_points)
        index = {id(point): i for i, point in enumerate(points)}
        self._ids = [str(point.id) for point in points]
        self._sizes = [self._num_candidates(point) for point in points]
        num = len(points)
        # parent[d]: the choice decision d is conditional on (-1 for none); under[d]: which of its
        # candidates holds d.
        self._parent = [-1] * num
        self._under = [0] * num
        members: dict[int, list[int]] = {}
        containers: dict[int, Any] = {}
        for d, point in enumerate(points):
            if point.parent_choice is not None:
                self._parent[d] = index[id(point.parent_choice)]
                node = point.parent_spec
                while not isinstance(node, pg.geno.Space):
                    node = node.parent_spec
                self._under[d] = int(node.index)
            if point.subchoice_index is not None:
                container = point.parent_spec
                members.setdefault(id(container), []).append(d)
                containers[id(container)] = container
        self._conditional = any(parent >= 0 for parent in self._parent)
        # subtree[d]: the decisions below decision d, in spec order (empty unless conditional).
        self._subtree: list[list[int]] = [[] for _ in range(num)]
        for d in range(num):
            ancestor = self._parent[d]
            while ancestor >= 0:
                self._subtree[ancestor].append(d)
                ancestor = self._parent[ancestor]
        self._groups: dict[int, Group] = {}
        self._swap_groups: list[tuple[int, ...]] = []
        for key, group in members.items():
            container = containers[key]
            distinct, ordered = bool(container.distinct), bool(container.sorted)
            if distinct or ordered:
                for d in group:
                    self._groups[d] = (tuple(group), distinct, ordered)
            if distinct and not ordered and len(group) > 1:
                self._swap_groups.append(tuple(group))
        self._zobrist = [
            [_hash64(f"{d}:{k}") for k in range(size)] for d, size in enumerate(self._sizes)
        ]
        self._state = _State()

    @staticmethod
    def _num_candidates(point: pg.geno.DecisionPoint) -> int:
        if not isinstance(point, pg.geno.Choices):
            raise ValueError(
                f"local_search supports categorical decisions only (pg.oneof, pg.manyof); "
                f"decision point {point.id} is a {type(point).__name__}: pick another algorithm "
                f"for this space"
            )
        return len(point.candidates)

    # The DNAGenerator contract.

    def _propose(self) -> pg.DNA:
        """The next untried neighbour of the current point, or a random point (see module doc).

        The restart check runs before choosing, not after noting the proposal: the proposal's
        reward, if ``_feedback`` brings it next, is taken before the check, as when it is replayed.
        """
        self._settle()
        state = self._state
        if state.current is None or self.num_proposals < self.initial_random:
            point = self._random_point()
            key = self._key(point)
        else:
            found = self._next_neighbour()
            assert found is not None  # _settle() restarts when none is left.
            key, point = found
        state.proposed.add(key)
        return self._to_dna(point)

    def _replay(self, trial_id: int, dna: pg.DNA, reward: Any) -> None:
        """One trial of the history: proposed, then (if it has a reward) evaluated."""
        del trial_id
        self._replay_numbers(dna_decisions(dna), reward)

    def recover_decisions(self, history: Sequence[tuple[list[Any], Any]]) -> None:
        """``recover`` with each DNA as its ``to_numbers()`` (the controller's fast replay)."""
        for numbers, reward in history:
            self._replay_numbers(numbers, reward)
            self._num_proposals += 1
            if reward is not None:
                self._num_feedbacks += 1

    def _replay_numbers(self, numbers: list[Any], reward: Any) -> None:
        point = self._encode(numbers)
        key = self._key(point)
        self._state.proposed.add(key)
        if reward is not None:
            self._evaluate(key, point, reward)
        self._settle()

    def _feedback(self, dna: pg.DNA, reward: Any) -> None:
        """The reward of a proposal, in-process (the controller replays the history instead).

        Fed right after its proposal, a reward has the effect it has when replayed. Fed later, after
        a restart, it counts for the new climb.
        """
        point = self._encode(dna_decisions(dna))
        key = self._key(point)
        self._state.proposed.add(key)
        self._evaluate(key, point, reward)
        self._settle()

    # State transitions.

    def _evaluate(self, key: int, point: list[int], reward: Any) -> None:
        """Takes a reward: the current point moves to ``point`` if it improves enough on it."""
        value = float(reward[0] if isinstance(reward, tuple) else reward)
        if not math.isfinite(value):
            return
        state = self._state
        if state.best is None or value > state.best_reward:
            state.best, state.best_reward = list(point), value
        if state.current is None or value > state.current_reward + self.min_improvement:
            if state.current is not None:
                state.moves += 1
            state.current, state.current_key, state.current_reward = list(point), key, value
            state.reset_neighbourhood()

    def _settle(self) -> None:
        """Restarts if every neighbour of the current point has been proposed (a local optimum)."""
        state = self._state
        if state.current is not None and self._next_neighbour() is None:
            state.current = None
            state.restarts += 1
            state.reset_neighbourhood()

    def _next_neighbour(self) -> tuple[int, list[int]] | None:
        """The first neighbour of the current point in its order that was not proposed yet.

        The proposed set only grows while the current point stays, so the walk only moves on:
        over a point's whole stay, each of its neighbours is drawn and looked up once.
        """
        state = self._state
        current = state.current
        assert current is not None
        if state.walk is None:
            state.walk = self._walk(current, state.current_key)
        while True:
            if state.neighbour is None:
                move = state.walk.next_move()
                if move is None:
                    return None
                state.neighbour = self._apply(current, state.current_key, move)
            if state.neighbour[0] not in state.proposed:
                return state.neighbour
            state.neighbour = None

    # Neighbourhoods.

    def _walk(self, point: Sequence[int], key: int) -> _Walk:
        """The neighbourhood of ``point``, in the point's seeded random order."""
        sizes, groups = self._sizes, self._groups
        segments: list[tuple[Any, int, Sequence[Any] | None]] = []
        ends: list[int] = []
        total = 0
        for d, value in enumerate(point):
            if value < 0:
                continue
            group = groups.get(d)
            if group is None:
                count, choices = sizes[d] - 1, None
            else:
                choices = self._alternatives(point, group, d, sizes[d])
                count = len(choices)
            if count:
                total += count
                segments.append((d, value, choices))
                ends.append(total)
        for members in self._swap_groups:
            if point[members[0]] >= 0:  # Else the whole pg.manyof is inactive.
                pairs = _pairs(len(members))
                total += len(pairs)
                segments.append((members, -1, pairs))
                ends.append(total)
        rng = random.Random(derive_seed(self.seed, "neighbours", f"{key:016x}"))
        return _Walk(point, segments, ends, rng)

    @staticmethod
    def _alternatives(point: Sequence[int], group: Group, d: int, size: int) -> list[int]:
        """The other candidates subchoice ``d`` of a constrained ``pg.manyof`` may take."""
        members, distinct, ordered = group
        low, high = 0, size - 1
        if ordered:
            i = members.index(d)
            if i > 0:
                low = point[members[i - 1]] + (1 if distinct else 0)
            if i + 1 < len(members):
                high = point[members[i + 1]] - (1 if distinct else 0)
        taken = {point[m] for m in members} if distinct else {point[d]}
        return [k for k in range(low, high + 1) if k not in taken]

    def _apply(self, point: Sequence[int], key: int, move: Move) -> tuple[int, list[int]]:
        """The neighbour that ``move`` makes of ``point``, and its key."""
        neighbour = list(point)
        base = key
        conditional = False
        for d, k in move:
            key ^= self._zobrist[d][neighbour[d]] ^ self._zobrist[d][k]
            neighbour[d] = k
            conditional = conditional or bool(self._subtree[d])
        if not conditional:
            return key, neighbour
        below = sorted({e for d, _ in move for e in self._subtree[d]})
        for e in below:
            neighbour[e] = -1
        rng = random.Random(derive_seed(self.seed, "fill", f"{base:016x}", move))
        self._fill(neighbour, below, rng)
        return self._key(neighbour), neighbour

    # Points: random draws, keys, and conversions.

    def _random_point(self) -> list[int]:
        """A random point not proposed before (a repeat only if ``_MAX_RANDOM_DRAWS`` fail)."""
        rng = random.Random(derive_seed(self.seed, "random", self.num_proposals))
        proposed = self._state.proposed
        point: list[int] = []
        for _ in range(_MAX_RANDOM_DRAWS):
            point = [-1] * len(self._sizes)
            self._fill(point, range(len(self._sizes)), rng)
            if self._key(point) not in proposed:
                break
        return point

    def _fill(self, point: list[int], decisions: Iterable[int], rng: random.Random) -> None:
        """Draws a value for every active, unset decision of ``decisions`` (in spec order).

        A constrained ``pg.manyof`` is drawn whole at its first subchoice, as PyGlove draws it: a
        random sample of distinct candidates, sorted if the choices are sorted.
        """
        for d in decisions:
            if point[d] >= 0 or not self._active(point, d):
                continue
            group = self._groups.get(d)
            if group is None:
                point[d] = rng.randrange(self._sizes[d])
                continue
            members, distinct, ordered = group
            size = self._sizes[d]
            if distinct:
                values = rng.sample(range(size), len(members))
            else:
                values = [rng.randrange(size) for _ in members]
            if ordered:
                values.sort()
            for member, value in zip(members, values, strict=True):
                point[member] = value

    def _active(self, point: Sequence[int], d: int) -> bool:
        parent = self._parent[d]
        return parent < 0 or point[parent] == self._under[d]

    def _key(self, point: Sequence[int]) -> int:
        """The point's Zobrist hash: the XOR of one constant per active decision's value."""
        zobrist = self._zobrist
        key = 0
        for d, value in enumerate(point):
            if value >= 0:
                key ^= zobrist[d][value]
        return key

    def _encode(self, numbers: Sequence[Any]) -> list[int]:
        """The point (value per decision point, -1 where inactive) of a DNA's decision numbers.

        Raises:
            ValueError: The numbers are not a DNA of this space.
        """
        sizes, parent, under = self._sizes, self._parent, self._under
        flat = not self._conditional and len(numbers) == len(sizes)
        if flat and all(type(v) is int and 0 <= v < n for v, n in zip(numbers, sizes, strict=True)):
            return list(numbers)  # The fast path; the loop below says what is wrong, if anything.
        point = [-1] * len(sizes)
        position = 0
        for d, size in enumerate(sizes):
            above = parent[d]
            if above >= 0 and point[above] != under[d]:
                continue  # Inactive: its parent chose another candidate (or is inactive).
            if position >= len(numbers):
                raise ValueError(f"the DNA {list(numbers)} is too short for this space")
            value = numbers[position]
            if type(value) is not int or not 0 <= value < size:
                raise ValueError(
                    f"the DNA {list(numbers)} has {value!r} for decision point {self._ids[d]}, "
                    f"which has {size} candidates"
                )
            point[d] = value
            position += 1
        if position != len(numbers):
            raise ValueError(f"the DNA {list(numbers)} is too long for this space")
        return point

    def _to_dna(self, point: Sequence[int]) -> pg.DNA:
        return dna_from_numbers([value for value in point if value >= 0], self.dna_spec)

    # Inspection and the flat-cost hook.

    @property
    def current(self) -> pg.DNA | None:
        """The point being climbed from (None before the first reward and after a restart)."""
        current = self._state.current
        return None if current is None else self._to_dna(current)

    @property
    def current_reward(self) -> float | None:
        """The current point's reward (None when there is no current point)."""
        state = self._state
        return None if state.current is None else state.current_reward

    @property
    def best(self) -> pg.DNA | None:
        """The best architecture evaluated so far, over all climbs."""
        best = self._state.best
        return None if best is None else self._to_dna(best)

    @property
    def best_reward(self) -> float | None:
        """The best reward so far (None before the first)."""
        state = self._state
        return None if state.best is None else state.best_reward

    @property
    def moves(self) -> int:
        """How many times the current point moved to a better one."""
        return self._state.moves

    @property
    def restarts(self) -> int:
        """How many local optima were left for a random restart."""
        return self._state.restarts

    def neighbours(self, dna: pg.DNA, limit: int | None = None) -> list[pg.DNA]:
        """The neighbours of ``dna``, in the order this generator would propose them.

        Args:
            dna: A DNA of this generator's space.
            limit: How many of them, from the first; all if None.

        Returns:
            The neighbours, each with the spec attached; proposed ones included.
        """
        point = self._encode(dna_decisions(dna))
        key = self._key(point)
        walk = self._walk(point, key)
        count = walk.size if limit is None else min(limit, walk.size)
        moves = [walk.next_move() for _ in range(count)]
        return [self._to_dna(self._apply(point, key, move)[1]) for move in moves if move]

    def snapshot_state(self) -> dict[str, Any]:
        """Everything ``recover`` rebuilt from the history, as JSON-serializable data.

        The neighbourhood order and the position in it are not stored: the order is derived from
        the seed and the current point, and the position is the first neighbour not proposed.
        """
        state = self._state
        return {
            "version": self.STATE_VERSION,
            "config": self._config(),
            "num_proposals": self.num_proposals,
            "num_feedbacks": self.num_feedbacks,
            "proposed": [f"{key:016x}" for key in sorted(state.proposed)],
            "current": _numbers(state.current),
            "current_reward": self.current_reward,
            "best": _numbers(state.best),
            "best_reward": self.best_reward,
            "moves": state.moves,
            "restarts": state.restarts,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Puts a fresh, set-up generator in the state of ``snapshot_state``'s generator.

        Args:
            state: A snapshot of a generator with the same seed and options on the same space.

        Raises:
            ValueError: The snapshot has another version, seed, options or space.
        """
        check_own_state(
            "local_search",
            state,
            self.STATE_VERSION,
            self._config(),
            "with another seed or other options, or on another space",
        )
        restored = _State(proposed={int(key, 16) for key in state["proposed"]})
        if state["current"] is not None:
            restored.current = self._encode(state["current"])
            restored.current_key = self._key(restored.current)
            restored.current_reward = float(state["current_reward"])
        if state["best"] is not None:
            restored.best = self._encode(state["best"])
            restored.best_reward = float(state["best_reward"])
        restored.moves = int(state["moves"])
        restored.restarts = int(state["restarts"])
        self._state = restored
        self._num_proposals = int(state["num_proposals"])
        self._num_feedbacks = int(state["num_feedbacks"])

    def _config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "initial_random": self.initial_random,
            "min_improvement": self.min_improvement,
            "decisions": dict(zip(self._ids, self._sizes, strict=True)),
        }


@functools.cache
def _pairs(size: int) -> tuple[tuple[int, int], ...]:
    return tuple(itertools.combinations(range(size), 2))


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _numbers(point: list[int] | None) -> list[int] | None:
    """A point's DNA numbers (its active decisions' values), or None."""
    return None if point is None else [value for value in point if value >= 0]


def _factory(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    return LocalSearchGenerator(
        seed=seed,
        initial_random=options["initial_random"],
        min_improvement=float(options["min_improvement"]),
    )


def _checks(options: Mapping[str, Any]) -> list[str]:
    """Range checks beyond the record's types and positive integers."""
    value = options["min_improvement"]
    if not math.isfinite(value) or value < 0:
        return [
            f"option min_improvement must be a finite number of at least 0 (the reward margin a "
            f"neighbour needs to become the current point), got {value!r}"
        ]
    return []


LOCAL_SEARCH = Algorithm(
    name="local_search",
    summary=(
        "Local search as in White et al. 2020: tries the one-decision neighbours of the best "
        "architecture so far in random order, moves on improvement, restarts at a local optimum."
    ),
    factory=_factory,
    options={"initial_random": 1, "min_improvement": 0.0},
    checks=_checks,
)
