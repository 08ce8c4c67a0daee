"""The PyTorch task kinds: ``segmentation_3d`` (3-D medical images) and ``torch_classification``.

A torch task kind is what ``kfnas.torch.runner`` needs besides the network (which the space's
entry in ``kfnas.torch.networks.TORCH_NETWORKS`` builds): its data as batches of tensors, its loss
and its evaluation. Like every task kind it declares ``name``, ``metric_names``,
``default_metric``, ``known_limits`` and checks ``task.options`` (``OptionTable``) and the user's
data before any trial starts; it says ``framework = "pytorch"``, so the trial step, the
measurement step and export use the torch entry points (``kfnas.tasks.frameworks``).

This module never imports torch at import time: ``kfnas.tasks.TASKS`` lists these kinds, and an
experiment is checked, without it. When torch is not installed, ``data_problems`` says how to
install it before any trial.

Knobs every torch kind reads (``TORCH_OPTIONS``): ``optimizer`` (``sgd``, ``adam``, ``adamw``),
``learning_rate`` (default: the kind's ``base_rate`` scaled by the batch), ``momentum``,
``weight_decay``, ``warmup_steps`` (default a tenth of the steps; linear warm-up, then cosine
decay to 0) and ``validation_batch_size``.

To add a torch task kind: subclass ``TorchTask`` (its options, ``input_shape``,
``check_data``, ``batches``, ``loss`` and ``evaluate``) and register it in ``kfnas.tasks.TASKS``
by ``"module:OBJECT"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from kfnas.config.spec import DataSpec, TaskSpec
from kfnas.spaces.options import Option, choice, fraction, integer, number
from kfnas.tasks.base import ModelInputs, OptionTable
from kfnas.tasks.frameworks import FRAMEWORKS

#: Knobs of every torch task kind (see the module docstring).
TORCH_OPTIONS: dict[str, Option] = {
    "optimizer": choice(("sgd", "adam", "adamw"), "adam"),
    "learning_rate": number(0, strict=True),
    "momentum": fraction(0.9),
    "weight_decay": number(0, 0.0),
    "warmup_steps": integer(0),
    "validation_batch_size": integer(1, 4),
}

#: A batch: model inputs and targets, as numpy arrays (the runner makes tensors of them).
Batch = tuple[np.ndarray, np.ndarray]


class TorchTask(OptionTable):
    """What the torch task kinds share (see the module docstring).

    Class attributes a kind sets: ``name``, ``default_metric``, ``metric_names``, ``options``,
    ``known_limits``, ``model_inputs`` and ``base_rate`` (``(rate, batch)``: the default rate
    is ``rate * batch_size / batch``).
    """

    framework: ClassVar[str] = "pytorch"
    serving_export: ClassVar[Any] = None  # exported by the torch exporter, not official.vision
    augmentation_space: ClassVar[str | None] = None
    known_limits: ClassVar[tuple[str, ...]] = ()
    base_rate: ClassVar[tuple[float, int]] = (1e-3, 8)
    model_inputs: ClassVar[ModelInputs]

    def data_problems(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """PyTorch missing (how to install it), else the kind's own checks (``check_data``)."""
        missing = FRAMEWORKS.get(self.framework).missing()
        if missing:
            return [f"the {self.name} task trains with PyTorch, and {missing}"]
        return self.check_data(task, data)

    def check_data(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """What is wrong with the user's data (torch is installed)."""
        raise NotImplementedError

    def learning_rate(self, opts: Mapping[str, Any], batch_size: int) -> float:
        """``learning_rate``, or ``base_rate`` scaled linearly by the batch."""
        rate, per = self.base_rate
        return float(opts.get("learning_rate", rate * batch_size / per))

    def input_shape(self, task: TaskSpec) -> tuple[int, ...]:
        """One model input without the batch dimension, channels first."""
        raise NotImplementedError

    def batches(
        self, task: TaskSpec, data: DataSpec, *, batch_size: int, seed: int
    ) -> tuple[Iterator[Batch], Sequence[Batch]]:
        """The endless, seeded training batches and the validation batches (one pass)."""
        raise NotImplementedError

    def loss(self, logits: Any, targets: Any) -> Any:
        """The training loss (a scalar tensor) of a batch's logits against its targets."""
        raise NotImplementedError

    def evaluate(self, model: Any, batches: Sequence[Batch]) -> dict[str, float]:
        """One evaluation pass over ``batches``: every metric of ``metric_names``, and ``loss``."""
        raise NotImplementedError

    def predictions(self, model: Any, batches: Sequence[Batch]) -> Iterator[tuple[Any, Any, float]]:
        """Each batch's logits and targets on the model's device, and its loss; no gradients."""
        import torch

        device = _device_of(model)
        with torch.no_grad():
            for images, labels in batches:
                logits = model(torch.from_numpy(images).to(device))
                targets = torch.from_numpy(labels).to(device)
                yield logits, targets, float(self.loss(logits, targets))


class Segmentation3dTask(TorchTask):
    """3-D segmentation of medical volumes (Medical Segmentation Decathlon layout).

    ``data.train`` and ``data.validation`` each name a ``dataset.json`` (or its folder); every
    case is resized to ``image_size`` on each side (``kfnas.data.medical3d.fit_volume``). The loss
    is soft Dice (foreground classes) plus cross-entropy; ``dice`` is the mean Dice of the
    foreground classes over the validation volumes (each class's overlap summed over the volumes),
    ``dice_<k>`` each class's. ``task.num_classes`` counts the background.
    """

    name = "segmentation_3d"
    default_metric = "dice"
    metric_names = ("dice",)
    options = TORCH_OPTIONS
    base_rate = (1e-3, 2)
    model_inputs = ModelInputs(
        describe_template="{0}-channel {1}x{2}x{3} volumes",
        serving_note="Volumes are resized and normalized by the caller as in training.",
        limit_template=(
            "Served volumes must be {1}x{2}x{3} with {0} channels, intensities as in the "
            "training data; other sizes were not evaluated."
        ),
    )
    known_limits = (
        "Trained and evaluated on volumes resized to a cube; anisotropic voxel spacing is not "
        "taken into account.",
    )

    def input_shape(self, task: TaskSpec) -> tuple[int, ...]:
        """``(in_channels, S, S, S)``."""
        size = task.image_size
        return (int(task.options.get("in_channels", 1)), size, size, size)

    def check_data(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """The Decathlon layout's checks (``kfnas.data.medical3d``)."""
        from kfnas.data.medical3d import medical3d_data_problems

        return medical3d_data_problems(task, data)

    def batches(
        self, task: TaskSpec, data: DataSpec, *, batch_size: int, seed: int
    ) -> tuple[Iterator[Batch], Sequence[Batch]]:
        """Volumes in memory; training draws random cases with random flips (seeded)."""
        from kfnas.data.medical3d import fit_volume, load_cases

        def fitted(path: str) -> tuple[np.ndarray, np.ndarray]:
            pairs = [fit_volume(c.image, c.label, task.image_size) for c in load_cases(path)]
            images = np.stack([p[0] for p in pairs]).astype(np.float32)
            return _standardize(images), np.stack([p[1] for p in pairs]).astype(np.int64)

        train_x, train_y = fitted(data.train)
        val_x, val_y = fitted(data.validation)
        per = int(task.options.get("validation_batch_size", 4))
        validation = [(val_x[i : i + per], val_y[i : i + per]) for i in range(0, len(val_x), per)]
        return RandomBatches(train_x, train_y, batch_size, seed, (0, 1, 2)), validation

    def loss(self, logits: Any, targets: Any) -> Any:
        """Soft Dice over the foreground classes plus cross-entropy."""
        import torch.nn.functional as F  # noqa: N812

        probs = logits.softmax(dim=1)
        onehot = F.one_hot(targets, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
        dims = (0, *range(2, logits.ndim))
        overlap = (probs * onehot).sum(dims)[1:]
        total = (probs + onehot).sum(dims)[1:]
        dice = (2 * overlap + 1e-5) / (total + 1e-5)
        return (1 - dice.mean()) + F.cross_entropy(logits, targets)

    def evaluate(self, model: Any, batches: Sequence[Batch]) -> dict[str, float]:
        """Dice per foreground class over all volumes, their mean, and the mean loss."""
        import torch

        overlap: Any = 0
        total: Any = 0
        losses = []
        for logits, targets, loss in self.predictions(model, batches):
            losses.append(loss)
            classes = logits.shape[1]
            predicted = torch.nn.functional.one_hot(logits.argmax(1), classes)
            truth = torch.nn.functional.one_hot(targets, classes)
            dims = tuple(range(predicted.ndim - 1))
            overlap = overlap + (predicted * truth).sum(dims)
            total = total + predicted.sum(dims) + truth.sum(dims)
        # A class absent from both prediction and truth everywhere scores 1 (nothing to miss).
        per_class = [
            1.0 if int(t) == 0 else 2 * float(o) / float(t)
            for o, t in zip(overlap[1:], total[1:], strict=True)
        ]
        metrics = {f"dice_{k}": v for k, v in enumerate(per_class, start=1)}
        metrics["dice"] = float(np.mean(per_class)) if per_class else math.nan
        metrics["loss"] = float(np.mean(losses)) if losses else math.nan
        return metrics


class TorchClassificationTask(TorchTask):
    """Image classification with torch models on the TFRecords the TensorFlow task reads.

    The records are those of ``kfnas make-data classification`` and of official.vision's
    classification input (JPEG ``image/encoded``, ``image/class/label``), read with ``tf.data``
    (TensorFlow is a kfnas dependency; only the reading uses it), resized to ``image_size`` and
    normalized with the ImageNet mean and deviation as official.vision does; training flips
    images left-right at random. ``accuracy`` is top-1 over the validation split.
    """

    name = "torch_classification"
    default_metric = "accuracy"
    metric_names = ("accuracy",)
    options = TORCH_OPTIONS
    base_rate = (1e-3, 8)
    model_inputs = ModelInputs(
        describe_template="{0}-channel {1}x{2} images",
        serving_note="Images are resized and normalized by the caller as in training.",
        limit_template=(
            "Served images must be {1}x{2} RGB, normalized with the ImageNet mean and deviation."
        ),
    )

    def input_shape(self, task: TaskSpec) -> tuple[int, ...]:
        """``(3, S, S)``."""
        return (3, task.image_size, task.image_size)

    def check_data(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """The classification TFRecords' checks (``kfnas.data.classification``)."""
        from kfnas.data.classification import classification_data_problems

        return classification_data_problems(task, data)

    def batches(
        self, task: TaskSpec, data: DataSpec, *, batch_size: int, seed: int
    ) -> tuple[Iterator[Batch], Sequence[Batch]]:
        """The records decoded once into memory; training batches seeded, with flips."""
        train_x, train_y = _read_classification(data.train, task.image_size)
        val_x, val_y = _read_classification(data.validation, task.image_size)
        per = int(task.options.get("validation_batch_size", 4))
        validation = [(val_x[i : i + per], val_y[i : i + per]) for i in range(0, len(val_x), per)]
        return RandomBatches(train_x, train_y, batch_size, seed, (1,)), validation

    def loss(self, logits: Any, targets: Any) -> Any:
        """Cross-entropy."""
        import torch.nn.functional as F  # noqa: N812

        return F.cross_entropy(logits, targets)

    def evaluate(self, model: Any, batches: Sequence[Batch]) -> dict[str, float]:
        """Top-1 accuracy and the mean loss."""
        correct, count, losses = 0, 0, []
        for logits, targets, loss in self.predictions(model, batches):
            losses.append(loss)
            correct += int((logits.argmax(1) == targets).sum())
            count += len(targets)
        return {
            "accuracy": correct / count if count else math.nan,
            "loss": float(np.mean(losses)) if losses else math.nan,
        }


def _device_of(model: Any) -> Any:
    """The device of the model's parameters (the CPU for a model without any)."""
    import torch

    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


#: official.vision's ImageNet normalization (RGB, 0..255 scale).
_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32) * 255
_STDDEV_RGB = np.array([0.229, 0.224, 0.225], np.float32) * 255


def _read_classification(pattern: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every record of ``pattern``: normalized ``(N, 3, size, size)`` images and labels."""
    import tensorflow as tf

    def decode(record: Any) -> tuple[Any, Any]:
        features = tf.io.parse_single_example(
            record,
            {
                "image/encoded": tf.io.FixedLenFeature((), tf.string),
                "image/class/label": tf.io.FixedLenFeature((), tf.int64),
            },
        )
        image = tf.io.decode_image(features["image/encoded"], channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (size, size))
        return image, features["image/class/label"]

    files = sorted(tf.io.gfile.glob(pattern))
    images, labels = [], []
    for image, label in tf.data.TFRecordDataset(files).map(decode).as_numpy_iterator():
        images.append((image - _MEAN_RGB) / _STDDEV_RGB)
        labels.append(label)
    return np.stack(images).transpose(0, 3, 1, 2).astype(np.float32), np.array(labels, np.int64)


def _standardize(images: np.ndarray) -> np.ndarray:
    """Each volume and channel to zero mean and unit deviation (a constant one to zeros)."""
    axes = tuple(range(2, images.ndim))
    mean = images.mean(axis=axes, keepdims=True)
    std = images.std(axis=axes, keepdims=True)
    return ((images - mean) / np.where(std > 0, std, 1)).astype(np.float32)


class RandomBatches:
    """Endless batches of random examples, each flipped along each of ``flip_axes`` at random.

    ``flip_axes`` are spatial axes counted without the channel (``0``: the first after it); a
    dense label (a segmentation's) is flipped with its input. ``rng`` is the seeded NumPy
    generator: a checkpoint stores its state, so a resumed trial draws the batches it would have.
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, flip_axes: Sequence[int]
    ) -> None:
        self.x, self.y, self.batch_size, self.flip_axes = x, y, batch_size, tuple(flip_axes)
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> RandomBatches:
        return self

    def __next__(self) -> Batch:
        index = self.rng.integers(0, len(self.x), size=self.batch_size)
        images, labels = self.x[index].copy(), self.y[index].copy()
        for i in range(self.batch_size):
            for axis in self.flip_axes:
                if self.rng.random() < 0.5:
                    images[i] = np.flip(images[i], axis=axis + 1)
                    if labels.ndim > 1:
                        labels[i] = np.flip(labels[i], axis=axis)
        return images, labels


SEGMENTATION_3D = Segmentation3dTask()
TORCH_CLASSIFICATION = TorchClassificationTask()

__all__ = [
    "SEGMENTATION_3D",
    "TORCH_CLASSIFICATION",
    "TORCH_OPTIONS",
    "RandomBatches",
    "Segmentation3dTask",
    "TorchClassificationTask",
    "TorchTask",
]
