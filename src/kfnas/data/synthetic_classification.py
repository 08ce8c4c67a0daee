"""A seeded synthetic classification dataset: one coloured shape per image on a plain background.

``write_classification_dataset`` writes ``train-0000i-of-0000N.tfrecord`` and
``validation-0000i-of-0000N.tfrecord`` shards of ``tf.train.Example`` records in the format of
official.vision's classification input (``classification_input.Decoder``, the ImageNet TFRecord
convention): JPEG ``image/encoded`` (quality 95, no chroma subsampling), ``image/format``,
``image/height``, ``image/width``, one ``image/class/label`` in ``0..num_classes - 1`` and its
``image/class/text``. There is no annotation file (``DatasetFiles.annotations`` is empty).

Class ``k`` is the shape ``SHAPES[k]`` of the detection dataset (``kfnas.data.synthetic``) in its
colour, so the colour alone gives the class away and a tiny network learns it in a few dozen
steps. Each image holds one shape, 45-75 % of the image side, centred within the middle third of
the image so that official.vision's central evaluation crop keeps it. Labels cycle through the
classes (image ``i`` has label ``i % num_classes``), so every split is balanced.

Determinism: each image is drawn from its own generator seeded with ``(seed, split, index)``; JPEG
encoding and the serialized examples are deterministic, so the same arguments give byte-identical
files (with the same Pillow and its libjpeg).

To add a class: add a shape to ``kfnas.data.synthetic.SHAPES``; ``num_classes`` may then go up to
``len(SHAPES)``.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from kfnas.data.synthetic import SHAPES, DatasetFiles

_SPLITS = ("train", "validation")
_SIZE_RANGE = (0.45, 0.75)  # shape side as a fraction of the image side
_JPEG_QUALITY = 95


def _draw_image(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """One image (uint8 HxWx3) showing ``SHAPES[label]``, drawn from ``rng``."""
    background = int(rng.integers(170, 211))
    noise = rng.integers(-6, 7, size=(size, size, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    side = int(rng.integers(round(_SIZE_RANGE[0] * size), round(_SIZE_RANGE[1] * size) + 1))
    centre_x, centre_y = (int(v) for v in rng.integers(size // 3, size - size // 3 + 1, size=2))
    x0 = min(max(0, centre_x - side // 2), size - side)
    y0 = min(max(0, centre_y - side // 2), size - side)
    mask_image = Image.new("L", (size, size), 0)
    SHAPES[label].draw(ImageDraw.Draw(mask_image), (x0, y0, x0 + side - 1, y0 + side - 1))
    pixels[np.asarray(mask_image) > 0] = SHAPES[label].color
    return pixels


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(
        buffer, format="JPEG", quality=_JPEG_QUALITY, subsampling=0
    )
    return buffer.getvalue()


def _example(tf: Any, jpeg: bytes, size: int, label: int) -> bytes:
    """The serialized ``tf.train.Example`` of one image (map keys sorted: deterministic bytes)."""

    def ints(values: list[int]) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def strings(values: list[bytes]) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    feature = {
        "image/encoded": strings([jpeg]),
        "image/format": strings([b"jpeg"]),
        "image/height": ints([size]),
        "image/width": ints([size]),
        "image/class/label": ints([label]),
        "image/class/text": strings([SHAPES[label].name.encode()]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def _check_arguments(
    num_train: int, num_validation: int, image_size: int, num_classes: int, shards: int
) -> None:
    if num_train < 1 or num_validation < 1:
        raise ValueError(f"need at least 1 image per split, got {num_train}, {num_validation}")
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 2..{len(SHAPES)} (the shapes), got {num_classes}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    if not 1 <= shards <= min(num_train, num_validation):
        raise ValueError(f"shards must be in 1..{min(num_train, num_validation)}, got {shards}")


def write_classification_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_train: int = 128,
    num_validation: int = 32,
    image_size: int = 64,
    num_classes: int = 3,
    seed: int = 0,
    shards: int = 1,
) -> DatasetFiles:
    """Writes a synthetic classification dataset (see the module docstring) into ``out_dir``.

    Args:
        out_dir: Folder to write into, local or ``gs://`` (created if missing; files replaced).
        num_train: Number of training images.
        num_validation: Number of validation images.
        image_size: Side of the square images, in pixels.
        num_classes: Number of classes, 2 to ``len(SHAPES)``.
        seed: Seed of the dataset; the same arguments give byte-identical files.
        shards: Number of TFRecord files per split (images are split into contiguous runs).

    Returns:
        The paths written (``annotations`` empty: classification has no annotation file).

    Raises:
        ValueError: An argument is out of range.
    """
    import tensorflow as tf  # The data module's writer; proposing trials never gets here.

    _check_arguments(num_train, num_validation, image_size, num_classes, shards)
    out = os.fspath(out_dir)
    tf.io.gfile.makedirs(out)
    counts = {"train": num_train, "validation": num_validation}
    paths: dict[str, list[str]] = {}
    for split_index, split in enumerate(_SPLITS):
        paths[split] = []
        for shard, indices in enumerate(np.array_split(np.arange(counts[split]), shards)):
            path = os.path.join(out, f"{split}-{shard:05d}-of-{shards:05d}.tfrecord")
            paths[split].append(path)
            with tf.io.TFRecordWriter(path) as writer:
                for index in indices.tolist():
                    label = index % num_classes
                    rng = np.random.default_rng([seed, split_index, index])
                    pixels = _draw_image(rng, image_size, label)
                    writer.write(_example(tf, _jpeg(pixels), image_size, label))
    return DatasetFiles(
        out_dir=out,
        train=tuple(paths["train"]),
        validation=tuple(paths["validation"]),
        annotations="",
        num_classes=num_classes,
        image_size=image_size,
    )


__all__ = ["write_classification_dataset"]
