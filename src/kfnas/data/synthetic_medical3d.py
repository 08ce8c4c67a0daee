"""A seeded synthetic 3-D segmentation dataset in the Medical Segmentation Decathlon (MSD) layout.

``write_medical3d_dataset`` writes two MSD datasets, ``OUT/train/`` and ``OUT/validation/``, each
laid out like a Decathlon task folder::

    dataset.json
    imagesTr/case_000.nii.gz ...   float32 (X, Y, Z), or (X, Y, Z, C) for C modalities
    labelsTr/case_000.nii.gz ...   uint8 (X, Y, Z): 0 background, k = structure k

``dataset.json`` has the Decathlon keys ``name``, ``description``, ``reference``, ``release``,
``tensorImageSize`` (``"3D"`` or ``"4D"``), ``modality`` (``{"0": "MRI"}``, or ``{"0": "T1",
"1": "T2", ...}`` for several channels), ``labels`` (``{"0": "background", "1": "sphere", ...}``:
``num_classes`` entries, background included), ``numTraining``, ``numTest`` (0), ``training``
(``[{"image": "./imagesTr/case_000.nii.gz", "label": "./labelsTr/case_000.nii.gz"}, ...]``) and
``test`` (``[]``), so ``kfnas.data.medical3d`` and MSD tools read it as they read a real task.

Each volume is a cube of ``image_size`` voxels a side (1 mm, identity affine): Gaussian noise
(standard deviation ``NOISE`` = 0.25) around 0 for the background and, for each foreground class
``k = 1..num_classes - 1``, one structure ``STRUCTURES[k - 1]`` (sphere, cube, ellipsoid, cylinder,
octahedron, ...) of radius 18-28 % of the side at a random place, filled with intensity ``k``
(times ``1 + 0.5 c`` in channel ``c``) plus the same noise. Structures do not overlap when there is
room (30 placement tries each; then the last place is kept and a later structure covers part of an
earlier one). Classes differ by intensity (4 noise standard deviations apart) and by shape. It is
easy: two 3x3x3 convolutions of 8 channels with batch norm (Adam 0.01, batch 4, 24^3 voxels)
reached a validation Dice of about 0.8 on every class after 40 steps (``num_classes`` 4).

Determinism: each case comes from a generator seeded with ``(seed, split, index)``; NIfTI headers
hold no time, and files are gzipped with ``mtime=0`` and no file name, so the same arguments give
byte-identical files (on one zlib version), and a case does not change when the other split's size
does.

Writes go through ``kfnas.store``, so ``out_dir`` may be local or ``gs://BUCKET/PREFIX``. nibabel
(the ``torch`` extra: ``pip install kfnas[torch]``) is imported when writing.

To add a structure: add its name to ``STRUCTURES`` and its voxel test to ``_inside``;
``num_classes`` may then go up to ``len(STRUCTURES) + 1``.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

import numpy as np

from kfnas.data.medical3d import DATASET_FILE, NIBABEL_MISSING
from kfnas.data.synthetic import DatasetFiles
from kfnas.store import open_store

#: The foreground structures, in label order: class ``k`` is ``STRUCTURES[k - 1]``.
STRUCTURES = ("sphere", "cube", "ellipsoid", "cylinder", "octahedron", "box", "spheroid")
#: Modality names of multi-channel datasets (one channel is ``"MRI"``).
MODALITIES = ("T1", "T2", "FLAIR", "T1Gd")
NOISE = 0.25
_RADIUS = (0.18, 0.28)  # structure radius, as a fraction of the side
_PLACEMENT_TRIES = 30
_SPLITS = ("train", "validation")


class MedicalDatasetFiles(DatasetFiles):
    """``DatasetFiles`` of an MSD dataset: each split is one ``dataset.json``, not TFRecords.

    ``train`` and ``validation`` hold the split's ``dataset.json``; the patterns are those paths,
    so ``data_spec()`` and ``kfnas make-data`` give what ``segmentation_3d`` reads.
    """

    @property
    def train_pattern(self) -> str:
        """The training split's ``dataset.json``."""
        return self.train[0]

    @property
    def validation_pattern(self) -> str:
        """The validation split's ``dataset.json``."""
        return self.validation[0]


def _inside(structure: str, d: np.ndarray) -> np.ndarray:
    """Voxels inside a structure, given ``d`` = offsets from its centre divided by its semi-axes."""
    if structure in ("sphere", "ellipsoid", "spheroid"):
        return (d**2).sum(axis=0) <= 1.0
    if structure in ("cube", "box"):
        return np.abs(d).max(axis=0) <= 0.85
    if structure == "cylinder":
        return ((d[0] ** 2 + d[1] ** 2) <= 1.0) & (np.abs(d[2]) <= 0.9)
    if structure == "octahedron":
        return np.abs(d).sum(axis=0) <= 1.3
    raise ValueError(f"unknown structure {structure!r}")


def _semi_axes(rng: np.random.Generator, structure: str, size: int) -> np.ndarray:
    radius = max(2.0, float(rng.uniform(*_RADIUS)) * size)
    if structure in ("ellipsoid", "box"):
        axes = radius * rng.uniform(0.6, 1.4, size=3)
    elif structure == "spheroid":
        axes = radius * np.array([1.0, 1.0, float(rng.uniform(0.5, 0.8))])
    else:
        axes = np.full(3, radius)
    return np.minimum(axes, (size - 1) / 2).astype(np.float32)


def _draw_case(
    rng: np.random.Generator, grid: np.ndarray, num_classes: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """One case drawn from ``rng``: image float32 ``(C, S, S, S)``, label uint8 ``(S, S, S)``."""
    size = grid.shape[1]
    label = np.zeros(grid.shape[1:], dtype=np.uint8)
    for k in range(1, num_classes):
        structure = STRUCTURES[k - 1]
        for _ in range(_PLACEMENT_TRIES):
            axes = _semi_axes(rng, structure, size)
            reach = float(axes.max())
            centre = rng.uniform(reach, size - 1 - reach, size=3).astype(np.float32)
            mask = _inside(
                structure, (grid - centre[:, None, None, None]) / axes[:, None, None, None]
            )
            if not (label[mask] > 0).any():
                break  # else: try another place; the last try is kept, overlapping
        label[mask] = k
    noise = rng.standard_normal((channels, *label.shape), dtype=np.float32) * np.float32(NOISE)
    gains = (1.0 + 0.5 * np.arange(channels, dtype=np.float32))[:, None, None, None]
    image = label[np.newaxis].astype(np.float32) * gains + noise
    return image.astype(np.float32), label


def _nifti_gz(nibabel: Any, voxels: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 bytes of ``voxels`` (1 mm voxels), deterministic (gzip ``mtime=0``)."""
    image = nibabel.Nifti1Image(np.ascontiguousarray(voxels), np.eye(4))
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def _join(out: str, *parts: str) -> str:
    if out.startswith("gs://"):
        return "/".join([out.rstrip("/"), *parts])
    return os.path.join(out, *parts)


def _check_arguments(
    num_train: int, num_validation: int, image_size: int, num_classes: int, in_channels: int
) -> None:
    if num_train < 1 or num_validation < 1:
        raise ValueError(f"need at least 1 case per split, got {num_train}, {num_validation}")
    if not 2 <= num_classes <= len(STRUCTURES) + 1:
        raise ValueError(
            f"num_classes counts the background: it must be in 2..{len(STRUCTURES) + 1} (one "
            f"structure per foreground class), got {num_classes}"
        )
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 voxels, got {image_size}")
    if not 1 <= in_channels <= len(MODALITIES):
        raise ValueError(f"in_channels must be in 1..{len(MODALITIES)}, got {in_channels}")


def write_medical3d_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_train: int = 32,
    num_validation: int = 8,
    image_size: int = 32,
    num_classes: int = 3,
    seed: int = 0,
    in_channels: int = 1,
) -> DatasetFiles:
    """Writes a synthetic MSD dataset (see the module docstring) into ``out_dir``.

    Args:
        out_dir: Folder to write into, local or ``gs://`` (created if missing; files replaced).
        num_train: Number of training cases (``OUT/train``).
        num_validation: Number of validation cases (``OUT/validation``).
        image_size: Side of the cubic volumes, in voxels.
        num_classes: Number of classes including the background, at most
            ``len(STRUCTURES) + 1``.
        seed: Seed of the dataset; the same arguments give byte-identical files.
        in_channels: Modalities per image: 1 writes ``(X, Y, Z)`` images, more ``(X, Y, Z, C)``.

    Returns:
        A ``MedicalDatasetFiles``: ``train`` and ``validation`` are the two ``dataset.json``
        paths, ``annotations`` is empty, ``names`` the class names (background first).

    Raises:
        ValueError: An argument is out of range.
        ImportError: nibabel is not installed.
    """
    _check_arguments(num_train, num_validation, image_size, num_classes, in_channels)
    try:
        import nibabel
    except ImportError as e:
        raise ImportError(NIBABEL_MISSING) from e
    out = os.fspath(out_dir)
    store = open_store(out)
    names = ("background", *STRUCTURES[: num_classes - 1])
    modality = (
        {"0": "MRI"} if in_channels == 1 else {str(c): MODALITIES[c] for c in range(in_channels)}
    )
    grid = np.indices((image_size,) * 3, dtype=np.float32)
    counts = {"train": num_train, "validation": num_validation}
    paths: dict[str, str] = {}
    for split_index, split in enumerate(_SPLITS):
        width = max(3, len(str(counts[split] - 1)))
        training = []
        for index in range(counts[split]):
            rng = np.random.default_rng([seed, split_index, index])
            image, label = _draw_case(rng, grid, num_classes, in_channels)
            voxels = image[0] if in_channels == 1 else np.moveaxis(image, 0, -1)
            name = f"case_{index:0{width}d}.nii.gz"
            store.write_bytes(f"{split}/imagesTr/{name}", _nifti_gz(nibabel, voxels))
            store.write_bytes(f"{split}/labelsTr/{name}", _nifti_gz(nibabel, label))
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        meta = {
            "name": f"kfnas-synthetic-medical3d-{split}",
            "description": (
                f"Synthetic 3-D segmentation ({split}): one structure per foreground class in "
                f"noise, written by kfnas.data.synthetic_medical3d (seed {seed})"
            ),
            "reference": "kfnas.data.synthetic_medical3d",
            "release": "1.0",
            "tensorImageSize": "3D" if in_channels == 1 else "4D",
            "modality": modality,
            "labels": {str(k): n for k, n in enumerate(names)},
            "numTraining": counts[split],
            "numTest": 0,
            "training": training,
            "test": [],
        }
        store.write_text(f"{split}/{DATASET_FILE}", json.dumps(meta, indent=4) + "\n")
        paths[split] = _join(out, split, DATASET_FILE)
    return MedicalDatasetFiles(
        out_dir=out,
        train=(paths["train"],),
        validation=(paths["validation"],),
        annotations="",
        num_classes=num_classes,
        image_size=image_size,
        names=names,
    )


__all__ = ["MODALITIES", "STRUCTURES", "MedicalDatasetFiles", "write_medical3d_dataset"]
