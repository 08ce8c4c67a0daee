"""A seeded synthetic semantic-segmentation dataset: the detection dataset's shapes, per pixel.

``write_segmentation_dataset`` writes ``train-0000i-of-0000N.tfrecord`` and
``validation-0000i-of-0000N.tfrecord`` shards of ``tf.train.Example`` records in the format that
official.vision's ``segmentation_input.Decoder`` and ``Parser`` read: PNG ``image/encoded`` (RGB),
``image/height``, ``image/width``, ``image/segmentation/class/encoded`` (a single-channel PNG whose
pixel values are class ids), plus ``image/format``, ``image/segmentation/class/format`` and an
integer ``image/source_id``.

The images are those of ``kfnas.data.synthetic`` (same drawing code, same seeds: for equal
arguments the segmentation and detection datasets show the same pictures): 1 to 3 coloured shapes
on a plain, lightly noisy grey background. The mask holds 0 for the background and ``k`` for the
pixels of class ``k`` (shape ``SHAPES[k - 1]``), so values lie in ``0..num_classes`` and the model
predicts ``num_classes + 1`` classes. Each shape is painted in its own exact colour, which no
background pixel can take (every shape colour has a channel below 164, every background channel
is within 164..216) and shapes never touch, so the mask is read back from the colours exactly; the
writer checks each class's pixel count against the drawn areas.

Determinism: as in ``kfnas.data.synthetic``, each image comes from a generator seeded with
``(seed, split, index)`` and PNG and serialized examples are deterministic, so the same arguments
give byte-identical files.

To extend: new shapes come from ``kfnas.data.synthetic.SHAPES`` (keep their colours off the
background range); new record features go in ``_example``.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

from kfnas.data.synthetic import (
    _SPLITS,
    SHAPES,
    DatasetFiles,
    _check_arguments,
    _draw_image,
    _Object,
    _png,
)

MASK_KEY = "image/segmentation/class/encoded"


def class_mask(pixels: np.ndarray, objects: list[_Object]) -> np.ndarray:
    """The per-pixel class ids (uint8 HxW) of an image drawn by ``kfnas.data.synthetic``.

    Raises:
        RuntimeError: The colours do not give back the drawn areas (a shape colour collides with
            the background or another shape: see the module docstring).
    """
    mask = np.zeros(pixels.shape[:2], dtype=np.uint8)
    for label in sorted({o.label for o in objects}):
        hit = np.all(pixels == np.array(SHAPES[label - 1].color, dtype=np.uint8), axis=-1)
        expected = sum(o.area for o in objects if o.label == label)
        if int(hit.sum()) != expected:
            raise RuntimeError(
                f"class {label} ({SHAPES[label - 1].name}) covers {int(hit.sum())} pixels of its "
                f"colour but {expected} were drawn: its colour is not unique in the image"
            )
        mask[hit] = label
    return mask


def _mask_png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _example(tf: Any, png: bytes, mask_png: bytes, size: int, source_id: int) -> bytes:
    """The serialized ``tf.train.Example`` of one image and its mask (deterministic bytes)."""

    def ints(values: list[int]) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def strings(values: list[bytes]) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    feature = {
        "image/encoded": strings([png]),
        "image/format": strings([b"png"]),
        "image/height": ints([size]),
        "image/width": ints([size]),
        "image/source_id": strings([str(source_id).encode()]),
        MASK_KEY: strings([mask_png]),
        "image/segmentation/class/format": strings([b"png"]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def write_segmentation_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_train: int = 128,
    num_validation: int = 32,
    image_size: int = 64,
    num_classes: int = 3,
    seed: int = 0,
    shards: int = 1,
) -> DatasetFiles:
    """Writes a synthetic segmentation dataset (see the module docstring) into ``out_dir``.

    Args:
        out_dir: Folder to write into, local or ``gs://`` (created if missing; files replaced).
        num_train: Number of training images.
        num_validation: Number of validation images.
        image_size: Side of the square images, in pixels.
        num_classes: Number of classes besides the background, at most ``len(SHAPES)``.
        seed: Seed of the dataset; the same arguments give byte-identical files.
        shards: Number of TFRecord files per split (images are split into contiguous runs).

    Returns:
        The paths written; ``annotations`` is empty (segmentation has no annotation file).

    Raises:
        ValueError: An argument is out of range.
    """
    import tensorflow as tf  # The data module's writer; proposing trials never gets here.

    _check_arguments(num_train, num_validation, image_size, num_classes, shards)
    out = os.fspath(out_dir)
    tf.io.gfile.makedirs(out)
    counts = {"train": num_train, "validation": num_validation}
    first_id = {"train": 1, "validation": num_train + 1}
    paths: dict[str, list[str]] = {}
    for split_index, split in enumerate(_SPLITS):
        paths[split] = []
        runs = np.array_split(np.arange(counts[split]), shards)
        for shard, indices in enumerate(runs):
            path = os.path.join(out, f"{split}-{shard:05d}-of-{shards:05d}.tfrecord")
            paths[split].append(path)
            with tf.io.TFRecordWriter(path) as writer:
                for index in indices.tolist():
                    rng = np.random.default_rng([seed, split_index, index])
                    pixels, objects = _draw_image(rng, image_size, num_classes)
                    mask = class_mask(pixels, objects)
                    source_id = first_id[split] + index
                    writer.write(_example(tf, _png(pixels), _mask_png(mask), image_size, source_id))
    return DatasetFiles(
        out_dir=out,
        train=tuple(paths["train"]),
        validation=tuple(paths["validation"]),
        annotations="",
        num_classes=num_classes,
        image_size=image_size,
    )


__all__ = ["MASK_KEY", "class_mask", "write_segmentation_dataset"]
