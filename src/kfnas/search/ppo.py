"""``ppo``: a policy-gradient controller trained by proximal policy optimisation, NumPy only.

As in MnasNet (Tan et al. 2019, "MnasNet: Platform-Aware Neural Architecture Search for Mobile"),
the controller is a policy over architectures trained with PPO on the rewards of finished trials.
MnasNet's policy is an RNN; here it is the simplest policy that fits PyGlove's search spaces: one
categorical distribution (a vector of logits) per decision point of the ``DNASpec``, independent
of one another. A DNA is sampled by walking the decision points in order and drawing each active
one from its distribution:

* Conditional decisions (a choice inside a candidate of another choice, e.g.
  ``pg.one_of([pg.one_of([1, 2]), 3])``) are drawn only when their parent chose the candidate that
  holds them; an inactive decision takes no part in a DNA's log-probability, so its logits do not
  move when that DNA is learned from.
* ``pg.manyof`` subchoices are decisions of their own; ``choices_distinct`` masks the candidates
  the earlier subchoices took, ``choices_sorted`` the ones below the previous subchoice (and, when
  distinct too, the ones too high to leave room for the rest), the same masks at sampling and at
  learning time. Float and custom decision points are not supported (``setup`` refuses them).

Learning, in feedback order (the order ``recover`` replays the history: proposal order):

* A trial's advantage is its reward minus a moving-average baseline, the baseline is then moved:
  ``baseline = decay * baseline + (1 - decay) * reward``. It starts at the first reward.
* Every ``batch_size`` rewarded trials make one update: ``epochs`` steps of gradient ascent (with
  ``learning_rate``) on PPO's clipped surrogate ``mean(min(r * A, clip(r, 1 - clip, 1 + clip) *
  A))``, where ``r`` is the ratio of a DNA's probability under the policy being updated to that
  under the policy before the update (the whole DNA is one action, as in MnasNet), plus
  ``entropy_weight`` times the entropy of a DNA's active decisions (summed over the decisions,
  averaged over the batch). With ``normalize_advantages`` a batch's advantages are divided by
  their root mean square first, so the learning rate does not depend on the scale of the reward
  (accuracy, or a reward with a latency penalty). The log-probabilities and gradients are
  computed for the whole batch at once on ``(batch, decision, candidate)`` arrays.
* A failed or unfinished trial (reward None) and a non-finite reward change nothing.

Statelessness: the policy is a function of the history alone, so the controller's fresh generator
with ``recover(history)`` holds exactly the policy an uninterrupted generator would. The random
draws of the ``i``-th proposal come from ``random.Random(derive_seed(seed, "ppo", i))``, and
``recover`` restores ``i`` (the proposal count), so the algorithm needs no per-round seed
(``seed_per_round=False``): a stateless run follows an uninterrupted one draw for draw until the
controller drops a duplicate proposal (which uses up an index that the history does not count);
from then on it is a different but still deterministic sequence. Replaying is cheap: the controller
hands ``recover_decisions`` each trial's decisions read from its stored text (no DNA is built), and
``snapshot_state``/``restore_state`` let a caller skip even that: a snapshot holds everything
``recover`` rebuilds. Proposals are built once from their decisions
(``kfnas.search.sampling.dna_from_numbers``).

Options (``PPO.options`` has the defaults): ``learning_rate``, ``clip``, ``epochs``,
``batch_size``, ``baseline_decay``, ``entropy_weight``, ``normalize_advantages``; ``PPO.checks``
refuses values outside their ranges. To extend (another policy, e.g. an RNN over the decisions),
keep the contract: everything learned must come from ``_feedback`` in feedback order, sampling
must draw only from the seeded per-proposal RNG, and ``snapshot_state`` must cover what
``_feedback`` changes; bump ``STATE_VERSION`` when the snapshot's layout changes.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyglove as pg

from kfnas.search.algorithms import Algorithm, check_own_state, derive_seed
from kfnas.search.sampling import dna_decisions, dna_from_numbers

__all__ = ["PPO", "PPOGenerator"]

# Bounds the log of the probability ratio before exponentiating it (a guard against overflow only:
# with the default options a ratio never comes near exp(30)).
_MAX_LOG_RATIO = 30.0
_EPSILON = 1e-12


@pg.members(
    [
        ("seed", pg.typing.Int(), "Seed for the proposals' random draws."),
        ("learning_rate", pg.typing.Float(min_value=0.0), "Step size of gradient ascent."),
        ("clip", pg.typing.Float(min_value=0.0, max_value=1.0), "PPO's ratio clip epsilon."),
        ("epochs", pg.typing.Int(min_value=1), "Gradient steps per update."),
        ("batch_size", pg.typing.Int(min_value=1), "Rewarded trials per update."),
        ("baseline_decay", pg.typing.Float(min_value=0.0, max_value=1.0), "Baseline EMA decay."),
        ("entropy_weight", pg.typing.Float(min_value=0.0), "Weight of the entropy bonus."),
        ("normalize_advantages", pg.typing.Bool(), "Scale a batch's advantages to unit RMS."),
    ]
)
class PPOGenerator(pg.DNAGenerator):
    """Proximal policy optimisation over independent categorical decisions (see the module doc).

    Build it with ``PPO.create(options, seed)`` (or directly with every member), then
    ``setup(dna_spec)`` and ``recover(history)`` or ``restore_state(snapshot)``.
    """

    STATE_VERSION = 1
    """The layout version of ``snapshot_state``; ``restore_state`` refuses any other."""

    def _setup(self) -> None:
        """Indexes the spec's decision points and starts from the uniform policy."""
        # Symbolic member access costs microseconds: the hot paths read these plain copies.
        self._learning_rate = float(self.learning_rate)
        self._clip = float(self.clip)
        self._epochs = int(self.epochs)
        self._batch_size = int(self.batch_size)
        self._decay = float(self.baseline_decay)
        self._entropy_weight = float(self.entropy_weight)
        self._normalize = bool(self.normalize_advantages)
        points = list(self.dna_spec.decision_points)
        index = {id(point): i for i, point in enumerate(points)}
        self._ids = [str(point.id) for point in points]
        self._sizes = np.array([self._num_candidates(point) for point in points], dtype=np.int64)
        num = len(points)
        width = int(self._sizes.max()) if num else 1
        self._valid = np.arange(width)[None, :] < self._sizes[:, None]
        # parent[d] is the index of the choice that decision d is conditional on (-1 for none);
        # under[d] the candidate of that choice which holds decision d.
        self._parent = np.full(num, -1, dtype=np.int64)
        self._under = np.zeros(num, dtype=np.int64)
        # pg.manyof constraints, as bounds and exclusions: decision d may take the candidates c
        # with lower_inc[d] + choice[lower_from[d]] <= c <= upper[d] (no lower bound where
        # lower_from[d] is -1), except those its earlier distinct siblings took.
        self._lower_from = np.full(num, -1, dtype=np.int64)
        self._lower_inc = np.zeros(num, dtype=np.int64)
        self._upper = self._sizes - 1
        self._exclude: dict[int, list[int]] = {}
        siblings: dict[int, list[int]] = {}
        for d, point in enumerate(points):
            parent = point.parent_choice
            if parent is not None:
                self._parent[d] = index[id(parent)]
                self._under[d] = self._candidate_index(point, parent)
            if point.subchoice_index is not None:
                self._constrain(d, point, siblings.setdefault(id(point.parent_spec), []))
        self._constrained = frozenset(
            {int(d) for d in np.flatnonzero(self._lower_from >= 0)}
            | {int(d) for d in np.flatnonzero(self._upper < self._sizes - 1)}
            | set(self._exclude)
        )
        pairs = [(d, s) for d, before in self._exclude.items() for s in before]
        self._exclude_pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        self._conditional = bool((self._parent >= 0).any())
        self._tree = list(zip(self._parent.tolist(), self._under.tolist(), strict=True))
        self._logits = np.zeros((num, width))
        self._baseline: float | None = None
        self._num_rewards = 0
        self._num_updates = 0
        self._pending_choices: list[np.ndarray] = []
        self._pending_advantages: list[float] = []
        self._cumulative: list[list[float]] | None = None

    @staticmethod
    def _num_candidates(point: pg.geno.DecisionPoint) -> int:
        if not isinstance(point, pg.geno.Choices):
            raise ValueError(
                f"ppo supports categorical decisions only (pg.oneof, pg.manyof); decision point "
                f"{point.id} is a {type(point).__name__}: pick another algorithm for this space"
            )
        return len(point.candidates)

    @staticmethod
    def _candidate_index(point: pg.geno.DecisionPoint, parent: pg.geno.Choices) -> int:
        """Which candidate of ``parent`` holds ``point`` (through a multi-choice container)."""
        node = point.parent_spec
        while node.parent_spec is not parent:
            node = node.parent_spec
        for k, candidate in enumerate(parent.candidates):
            if candidate is node:
                return k
        raise ValueError(f"decision point {point.id} is not under a candidate of {parent.id}")

    def _constrain(self, d: int, point: pg.geno.Choices, before: list[int]) -> None:
        """Records the masks of subchoice ``d``; ``before`` lists its earlier siblings."""
        container = point.parent_spec
        if container.sorted and before:
            self._lower_from[d] = before[-1]
            self._lower_inc[d] = int(bool(container.distinct))
        if container.sorted and container.distinct:  # Leave room for the subchoices to come.
            self._upper[d] = self._sizes[d] - container.num_choices + point.subchoice_index
        if container.distinct and before:
            self._exclude[d] = list(before)
        before.append(d)

    # Proposing.

    def _propose(self) -> pg.DNA:
        """Samples a DNA from the policy with the RNG of this proposal's index."""
        rng = random.Random(derive_seed(self.seed, "ppo", self.num_proposals))
        choices = np.full((1, len(self._ids)), -1, dtype=np.int64)
        numbers = []
        for d in range(len(self._ids)):
            if not self._active(d, choices[0]):
                continue
            if d in self._constrained:
                allowed = self._allowed_one(d, choices[0])
                cumulative = list(itertools.accumulate(_softmax(self._logits[d], allowed)))
            else:
                cumulative = self._unconstrained_cumulative()[d]
            choice = _draw(cumulative, rng.random())
            choices[0, d] = choice
            numbers.append(choice)
        return dna_from_numbers(numbers, self.dna_spec)

    def _active(self, d: int, choices: np.ndarray) -> bool:
        parent = self._parent[d]
        return parent < 0 or choices[parent] == self._under[d]

    def _unconstrained_cumulative(self) -> list[list[float]]:
        """Every decision's cumulative candidate probabilities (cached until the next update)."""
        if self._cumulative is None:
            self._cumulative = [
                list(itertools.accumulate(_softmax(self._logits[d], self._valid[d])))
                for d in range(len(self._ids))
            ]
        return self._cumulative

    def _allowed_one(self, d: int, choices: np.ndarray) -> np.ndarray:
        """The candidates decision ``d`` may take, given the choices so far (-1: not yet)."""
        columns = np.arange(self._valid.shape[1])
        allowed = self._valid[d] & (columns <= self._upper[d])
        if self._lower_from[d] >= 0:
            allowed &= columns >= choices[self._lower_from[d]] + self._lower_inc[d]
        for sibling in self._exclude.get(d, ()):
            allowed[choices[sibling]] = False
        return allowed

    def _allowed_all(self, choices: np.ndarray) -> np.ndarray:
        """``_allowed_one`` for every active decision of a batch: ``(batch, decisions, width)``.

        Inactive decisions get their plain mask (they take no part in the log-probabilities).
        """
        active = choices >= 0
        columns = np.arange(self._valid.shape[1])
        lower = np.where(
            active & (self._lower_from >= 0),
            choices[:, np.maximum(self._lower_from, 0)] + self._lower_inc,
            0,
        )
        upper = np.where(active, self._upper, self._sizes - 1)
        allowed = (
            self._valid[None] & (columns >= lower[:, :, None]) & (columns <= upper[:, :, None])
        )
        if len(self._exclude_pairs):
            decision, sibling = self._exclude_pairs.T
            batch, pair = np.nonzero(active[:, decision])
            allowed[batch, decision[pair], choices[batch, sibling[pair]]] = False
        return allowed

    # Learning.

    def _feedback(self, dna: pg.DNA, reward: float | tuple[float, ...]) -> None:
        """Records a rewarded trial; every ``batch_size`` of them update the policy."""
        self._learn(dna_decisions(dna), reward)

    def recover_decisions(self, history: Sequence[tuple[list[Any], Any]]) -> None:
        """``recover`` with each DNA as its ``to_numbers()`` (the controller's fast replay)."""
        for numbers, reward in history:
            if reward is not None:
                self._learn(numbers, reward)
            self._num_proposals += 1
            if reward is not None:
                self._num_feedbacks += 1

    def _learn(self, numbers: list[Any], reward: float | tuple[float, ...]) -> None:
        value = float(reward[0] if isinstance(reward, tuple) else reward)
        if not math.isfinite(value):
            return
        choices = self._encode(numbers)
        if self._baseline is None:
            self._baseline = value
        self._pending_choices.append(choices)
        self._pending_advantages.append(value - self._baseline)
        decay = self._decay
        self._baseline = decay * self._baseline + (1.0 - decay) * value
        self._num_rewards += 1
        if len(self._pending_choices) >= self._batch_size:
            self._update(np.stack(self._pending_choices), np.array(self._pending_advantages))
            self._pending_choices, self._pending_advantages = [], []

    def _encode(self, numbers: list[Any]) -> np.ndarray:
        """The choice per decision point of a DNA's decisions, -1 for the inactive ones.

        Raises:
            ValueError: The DNA is not one of this space (the controller checks that earlier).
        """
        if not self._conditional:
            choices = np.array(numbers, dtype=np.int64)
            ok = len(numbers) == len(self._ids)
        else:
            walked = [-1] * len(self._ids)
            position = 0
            ok = True
            for d, (parent, under) in enumerate(self._tree):
                if parent < 0 or walked[parent] == under:
                    if position == len(numbers):
                        ok = False  # Too short.
                        break
                    walked[d] = numbers[position]
                    position += 1
            choices = np.array(walked, dtype=np.int64)
            ok = ok and position == len(numbers)
        if not ok or min(numbers, default=0) < 0 or bool(np.any(choices >= self._sizes)):
            raise ValueError(f"the DNA {numbers} is not a DNA of this space")
        return choices

    def _update(self, choices: np.ndarray, advantages: np.ndarray) -> None:
        """One PPO update on a batch: ``epochs`` ascent steps on the clipped surrogate.

        Args:
            choices: ``(batch, decisions)`` choices, -1 where a decision is inactive.
            advantages: ``(batch,)`` reward minus baseline.
        """
        size, width = len(choices), self._valid.shape[1]
        if self._normalize:
            scale = math.sqrt(float(np.mean(advantages**2)))
            advantages = advantages / scale if scale > _EPSILON else np.zeros_like(advantages)
        active = choices >= 0
        penalty = np.where(self._allowed_all(choices), 0.0, -np.inf)
        batch, decision = np.nonzero(active)
        choice = choices[batch, decision]
        flat = decision * width + choice  # Where each active choice sits in the logits.
        old_log_prob = None
        for _ in range(self._epochs):
            log_p, p = _log_softmax(self._logits, penalty)
            log_prob = np.bincount(batch, weights=log_p[batch, decision, choice], minlength=size)
            if old_log_prob is None:
                old_log_prob = log_prob
            ratio = np.exp(np.clip(log_prob - old_log_prob, -_MAX_LOG_RATIO, _MAX_LOG_RATIO))
            clipped = ((advantages >= 0) & (ratio > 1 + self._clip)) | (
                (advantages < 0) & (ratio < 1 - self._clip)
            )
            weight = np.where(clipped, 0.0, ratio * advantages)
            # d log p(chosen) / d logits = one_hot(chosen) - p, summed over the active decisions.
            gradient = np.bincount(flat, weights=weight[batch], minlength=self._logits.size)
            gradient = gradient.reshape(self._logits.shape)
            gradient -= np.einsum("bd,bdn->dn", weight[:, None] * active, p)
            if self._entropy_weight > 0:
                plogp = p * np.where(p > 0, log_p, 0.0)
                entropy = -plogp.sum(axis=2, keepdims=True)
                # d H / d logits_c = -p_c (log p_c + H), over the active decisions.
                d_entropy = np.einsum("bd,bdn->dn", active, plogp + p * entropy)
                gradient -= self._entropy_weight * d_entropy
            self._logits += (self._learning_rate / size) * gradient
        self._num_updates += 1
        self._cumulative = None

    # Inspection and the flat-cost hook.

    @property
    def baseline(self) -> float | None:
        """The moving-average reward baseline (None before the first reward)."""
        return self._baseline

    @property
    def num_updates(self) -> int:
        """How many PPO updates the policy has had."""
        return self._num_updates

    def probabilities(self) -> dict[str, list[float]]:
        """Each decision point's (unmasked) candidate probabilities, by decision id."""
        return {
            name: _softmax(self._logits[d], self._valid[d])[: self._sizes[d]].tolist()
            for d, name in enumerate(self._ids)
        }

    def snapshot_state(self) -> dict[str, Any]:
        """Everything ``recover`` rebuilt from the history, as JSON-serializable data.

        The proposals' RNG is not part of it: it is derived from the seed and the proposal count,
        which is.
        """
        return {
            "version": self.STATE_VERSION,
            "config": self._config(),
            "logits": [self._logits[d, :size].tolist() for d, size in enumerate(self._sizes)],
            "baseline": self._baseline,
            "num_rewards": self._num_rewards,
            "num_updates": self._num_updates,
            "pending_choices": [choices.tolist() for choices in self._pending_choices],
            "pending_advantages": list(self._pending_advantages),
            "num_proposals": self.num_proposals,
            "num_feedbacks": self.num_feedbacks,
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Puts a fresh, set-up generator in the state of ``snapshot_state``'s generator.

        Args:
            state: A snapshot of a generator with the same options on the same space.

        Raises:
            ValueError: The snapshot has another version, options or space.
        """
        check_own_state(
            "ppo",
            state,
            self.STATE_VERSION,
            self._config(),
            "with other options or on another space",
        )
        logits = np.zeros_like(self._logits)
        for d, row in enumerate(state["logits"]):
            logits[d, : len(row)] = row
        self._logits = logits
        self._baseline = None if state["baseline"] is None else float(state["baseline"])
        self._num_rewards = int(state["num_rewards"])
        self._num_updates = int(state["num_updates"])
        self._pending_choices = [np.array(c, dtype=np.int64) for c in state["pending_choices"]]
        self._pending_advantages = [float(a) for a in state["pending_advantages"]]
        self._num_proposals = int(state["num_proposals"])
        self._num_feedbacks = int(state["num_feedbacks"])
        self._cumulative = None

    def _config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "clip": self.clip,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "baseline_decay": self.baseline_decay,
            "entropy_weight": self.entropy_weight,
            "normalize_advantages": self.normalize_advantages,
            "decisions": dict(zip(self._ids, self._sizes.tolist(), strict=True)),
        }


def _draw(cumulative: list[float], u: float) -> int:
    """The index drawn by ``u`` in [0, 1) from cumulative probabilities (never a zero one)."""
    total = cumulative[-1]
    index = bisect.bisect_right(cumulative, u * total)
    # u * total can round up to the total: then the last candidate with a positive probability.
    return index if index < len(cumulative) else bisect.bisect_left(cumulative, total)


def _log_softmax(logits: np.ndarray, penalty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities and probabilities of ``logits + penalty`` over the last axis.

    ``penalty`` is 0 for an allowed candidate and -inf for a masked one (log-probability -inf,
    probability 0); it broadcasts against ``logits``.
    """
    masked = logits + penalty
    masked -= masked.max(axis=-1, keepdims=True)
    exp = np.exp(masked)
    total = exp.sum(axis=-1, keepdims=True)
    masked -= np.log(total)
    exp /= total
    return masked, exp


def _softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    return _log_softmax(logits, np.where(allowed, 0.0, -np.inf))[1]


def _factory(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    return PPOGenerator(
        seed=seed,
        learning_rate=float(options["learning_rate"]),
        clip=float(options["clip"]),
        epochs=options["epochs"],
        batch_size=options["batch_size"],
        baseline_decay=float(options["baseline_decay"]),
        entropy_weight=float(options["entropy_weight"]),
        normalize_advantages=options["normalize_advantages"],
    )


def _checks(options: Mapping[str, Any]) -> list[str]:
    """Range checks of the float options (types and integer sizes are the record's)."""
    ranges = {
        "learning_rate": (lambda v: v > 0, "greater than 0"),
        "clip": (lambda v: 0 < v < 1, "between 0 and 1 (exclusive)"),
        "baseline_decay": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
        "entropy_weight": (lambda v: v >= 0, "at least 0"),
    }
    out = []
    for key, (ok, wanted) in ranges.items():
        value = options[key]
        if not math.isfinite(value) or not ok(value):
            out.append(f"option {key} must be {wanted}, got {value!r}")
    return out


PPO = Algorithm(
    name="ppo",
    summary=(
        "Policy gradient as in MnasNet: a categorical policy per decision, trained by PPO on "
        "the rewards with a moving-average baseline, one update per batch_size trials."
    ),
    factory=_factory,
    options={
        "learning_rate": 0.05,
        "clip": 0.2,
        "epochs": 4,
        "batch_size": 8,
        "baseline_decay": 0.95,
        "entropy_weight": 0.0,
        "normalize_advantages": True,
    },
    checks=_checks,
    # recover restores the proposal count that keys each proposal's RNG, so rounds continue the
    # study seed's sequence (see the module docstring): no per-round seed.
    seed_per_round=False,
)
