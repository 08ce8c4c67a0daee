"""3-D medical segmentation data in the Medical Segmentation Decathlon (MSD) layout: reader, checks.

Each split of a ``segmentation_3d`` experiment (``data.train``, ``data.validation``) names one MSD
dataset: its ``dataset.json``, or the folder holding it, local (a path or ``file://``) or
``gs://BUCKET/...``. Real Decathlon datasets are read as they are. ``dataset.json`` keys read:

* ``"training"`` (required): ``[{"image": "./imagesTr/X.nii.gz", "label": "./labelsTr/X.nii.gz"},
  ...]``, paths relative to the folder of ``dataset.json`` (absolute paths and ``gs://`` URIs are
  taken as they are);
* ``"modality"`` (optional): ``{"0": "MRI", ...}``, one entry per image channel;
* ``"labels"`` (optional): ``{"0": "background", "1": ..., ...}``, one entry per class, background
  included;
* ``"name"`` (optional, for messages). ``"test"``, ``"numTraining"`` and the rest are not used.

Images are NIfTI-1 or NIfTI-2 files (``.nii``, or gzipped ``.nii.gz``: recognised by content, not
name) of shape ``(X, Y, Z)`` for one modality or ``(X, Y, Z, C)`` for several (``(X, Y, Z, 1, C)``
too); labels are ``(X, Y, Z)`` integer class ids. ``load_cases`` returns ``MedicalCase`` objects
with the image channels-first, ``(C, X, Y, Z)`` float32 (NIfTI scaling applied), and the label
``(X, Y, Z)`` int64; voxels are not reoriented or resampled. ``fit_volume`` resizes a case to the
cube the network takes (trilinear image, nearest-neighbour label).

``medical3d_data_problems`` checks a user's data before any trial starts and returns one message
per problem, naming the file and saying what to fix: each split given and its ``dataset.json``
found, readable and listing training cases; every listed file present; the ``labels`` and
``modality`` entries against ``task.num_classes`` and ``task.options.in_channels``; and, for the
first ``max_cases`` cases of each split, images and labels that read as NIfTI, have the same
spatial shape, the declared channel count and integer labels in ``0..num_classes - 1``. Volumes
smaller or larger than ``task.image_size`` are fine (``fit_volume`` resizes them).

Files are read through ``kfnas.store`` (``LocalStore`` semantics for local paths, ``GcsStore`` for
``gs://``). nibabel and scipy are imported inside the functions that need them; nibabel comes with
the ``torch`` extra (``pip install kfnas[torch]``). This module never imports torch or TensorFlow.

To add a check: write a function returning messages and call it from ``_dataset_problems`` (per
dataset, or per case read in its loop).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kfnas.data._files import SPLITS
from kfnas.store import ArtifactStore, open_store

if TYPE_CHECKING:
    from kfnas.config.spec import DataSpec, TaskSpec

DATASET_FILE = "dataset.json"
MAKE_DATA_HINT = "run `kfnas make-data medical3d --out DIR` for a synthetic dataset"
NIBABEL_MISSING = (
    "reading NIfTI volumes needs nibabel, which is not installed: pip install kfnas[torch]"
)
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_NAMED = 3  # missing files named in one message


class MedicalDataError(ValueError):
    """A dataset that cannot be read; the message names the file and says what to fix."""


@dataclasses.dataclass(frozen=True)
class MedicalCase:
    """One labelled volume.

    Attributes:
        name: The case's name: its image file name without ``.nii.gz`` / ``.nii``.
        image: float32 ``(C, D, H, W)``: channels first, then the file's X, Y, Z axes.
        label: int64 ``(D, H, W)``: class ids, ``0`` the background.
    """

    name: str
    image: np.ndarray
    label: np.ndarray


@dataclasses.dataclass(frozen=True)
class MsdDataset:
    """A parsed ``dataset.json``.

    Attributes:
        path: The ``dataset.json`` URI.
        meta: Its JSON object.
        cases: ``(image URI, label URI)`` of each ``"training"`` entry, in order.
    """

    path: str
    meta: dict[str, Any]
    cases: tuple[tuple[str, str], ...]

    @property
    def modalities(self) -> dict[str, str] | None:
        """The ``"modality"`` entry (channel index -> name), or ``None`` if absent."""
        return self.meta.get("modality")

    @property
    def labels(self) -> dict[str, str] | None:
        """The ``"labels"`` entry (class id -> name), or ``None`` if absent."""
        return self.meta.get("labels")


class _Files:
    """Reads local and ``gs://`` files, one store per bucket (so one client per bucket)."""

    def __init__(self) -> None:
        self._stores: dict[str, ArtifactStore] = {}

    def _gcs(self, uri: str) -> tuple[ArtifactStore, str]:
        bucket, _, key = uri[len("gs://") :].partition("/")
        if bucket not in self._stores:
            self._stores[bucket] = open_store(f"gs://{bucket}")
        return self._stores[bucket], key

    def read(self, uri: str) -> bytes:
        """The file's bytes.

        Raises:
            FileNotFoundError: There is no such file.
            OSError: It cannot be read (``StoreError`` for ``gs://``).
            ValueError: A malformed ``gs://`` URI.
        """
        if _is_gcs(uri):
            store, key = self._gcs(uri)
            return store.read_bytes(key)
        path = Path(_local(uri))
        if path.is_dir():
            raise FileNotFoundError(f"{uri} is a folder, not a file")
        return path.read_bytes()

    def missing(self, uris: Sequence[str], folder: str) -> list[str]:
        """The ``uris`` that do not exist (``gs://``: one listing of ``folder``, then lookups)."""
        if not any(_is_gcs(u) for u in uris):
            return [u for u in uris if not Path(_local(u)).is_file()]
        present: set[str] = set()
        if _is_gcs(folder):
            store, key = self._gcs(folder)
            present = {_join(folder, p) for p in store.list(key)}
        out = []
        for uri in uris:
            if uri in present:
                continue
            if _is_gcs(uri):
                store, key = self._gcs(uri)
                if store.exists(key):
                    continue
            elif Path(_local(uri)).is_file():
                continue
            out.append(uri)
        return out


def _is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def _local(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _join(folder: str, relative: str) -> str:
    """``relative`` resolved against ``folder`` (absolute paths and URIs are kept)."""
    if _is_gcs(relative) or relative.startswith("file://") or os.path.isabs(relative):
        return relative
    if _is_gcs(folder):
        bucket, _, key = folder[len("gs://") :].partition("/")
        return f"gs://{bucket}/" + posixpath.normpath(posixpath.join(key, relative)).lstrip("/")
    return os.path.normpath(os.path.join(_local(folder), relative))


def dataset_json_path(path: str) -> str:
    """The ``dataset.json`` URI of a split.

    ``path`` itself if it ends in ``.json`` or is a local file, else ``path/dataset.json``.
    """
    path = path.rstrip("/") or path
    if path.endswith(".json"):
        return path
    if not _is_gcs(path) and Path(_local(path)).is_file():
        return path
    return _join(path, DATASET_FILE) if not _is_gcs(path) else f"{path}/{DATASET_FILE}"


def _folder_of(json_path: str) -> str:
    if _is_gcs(json_path):
        return json_path.rsplit("/", 1)[0]
    return os.path.dirname(_local(json_path)) or "."


def read_dataset(path: str, *, files: _Files | None = None) -> MsdDataset:
    """Parses a split's ``dataset.json`` (see the module docstring).

    Args:
        path: The ``dataset.json`` or its folder, local or ``gs://``.
        files: The file reader to share between calls (one is made if ``None``).

    Raises:
        MedicalDataError: It is missing, is not JSON, lists no training cases or is malformed.
    """
    files = files or _Files()
    json_path = dataset_json_path(path)
    try:
        raw = files.read(json_path)
    except FileNotFoundError:
        raise MedicalDataError(
            f"{json_path} does not exist: point the split at an MSD dataset.json (or the folder "
            f"holding it), or {MAKE_DATA_HINT}"
        ) from None
    except (OSError, ValueError) as e:
        raise MedicalDataError(f"{json_path} cannot be read: {_first_line(e)}") from None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MedicalDataError(
            f"{json_path} is not valid JSON ({e}): fix it (the MSD dataset.json is one JSON "
            f"object), or {MAKE_DATA_HINT}"
        ) from None
    if not isinstance(meta, dict):
        raise MedicalDataError(
            f"{json_path} holds a JSON {type(meta).__name__}, not an object: the MSD dataset.json "
            f'is an object with a "training" list of {{"image": ..., "label": ...}} entries'
        )
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        what = "an empty" if training == [] else "no" if training is None else "a malformed"
        raise MedicalDataError(
            f'{json_path} has {what} "training" list: list the labelled cases as '
            f'"training": [{{"image": "./imagesTr/X.nii.gz", "label": "./labelsTr/X.nii.gz"}}, '
            f"...], or {MAKE_DATA_HINT}"
        )
    for key in ("modality", "labels"):
        if key in meta and not isinstance(meta[key], dict):
            raise MedicalDataError(
                f'{json_path}: "{key}" is a {type(meta[key]).__name__}; the MSD layout has an '
                f'object like {{"0": "{"MRI" if key == "modality" else "background"}", ...}}'
            )
    folder = _folder_of(json_path)
    cases = []
    for index, entry in enumerate(training):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("image"), str)
            and isinstance(entry.get("label"), str)
        ):
            raise MedicalDataError(
                f'{json_path}: "training" entry {index} is {_short(entry)}, not an object with '
                f'"image" and "label" paths (relative to the folder of dataset.json)'
            )
        cases.append((_join(folder, entry["image"]), _join(folder, entry["label"])))
    return MsdDataset(path=json_path, meta=meta, cases=tuple(cases))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError as e:
        raise ImportError(NIBABEL_MISSING) from e
    return nibabel


def read_nifti(uri: str, *, files: _Files | None = None) -> np.ndarray:
    """The voxels of a NIfTI file (``.nii`` or ``.nii.gz``), NIfTI scaling applied.

    Integer files without scaling keep their integer dtype; others are float32.

    Raises:
        FileNotFoundError: There is no such file.
        MedicalDataError: It cannot be read as NIfTI (the message names it and says what to do).
        ImportError: nibabel is not installed.
    """
    nibabel = _nibabel()
    files = files or _Files()
    try:
        raw = files.read(uri)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise MedicalDataError(f"{uri} cannot be read: {_first_line(e)}") from None
    try:
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
        error: Exception | None = None
        for kind in (nibabel.Nifti1Image, nibabel.Nifti2Image):
            try:
                image = kind.from_bytes(raw)
                break
            except Exception as e:  # nibabel raises several unrelated types for a bad header
                error = error or e
        else:
            assert error is not None
            raise error
        header = image.header
        slope, inter = header.get_slope_inter()
        dtype = image.get_data_dtype()
        if np.issubdtype(dtype, np.integer) and slope in (None, 1.0) and inter in (None, 0.0):
            return np.asarray(image.dataobj)
        return np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as e:  # gzip, zlib and nibabel's header and data errors share no base class
        raise MedicalDataError(_unreadable(uri, e)) from None


def _unreadable(uri: str, error: BaseException) -> str:
    return (
        f"{uri} cannot be read as NIfTI ({type(error).__name__}: {_first_line(error)}): "
        f"re-export it as .nii or .nii.gz (for example with nibabel.save or SimpleITK.WriteImage)"
    )


def _case_name(image_uri: str) -> str:
    name = image_uri.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _channels_first(voxels: np.ndarray, uri: str) -> np.ndarray:
    """``(X, Y, Z)`` -> ``(1, X, Y, Z)``; ``(X, Y, Z, C)``, ``(X, Y, Z, 1, C)`` -> ``(C, ...)``."""
    if voxels.ndim == 5 and voxels.shape[3] == 1:
        voxels = voxels[:, :, :, 0, :]
    if voxels.ndim == 3:
        return voxels[np.newaxis]
    if voxels.ndim == 4:
        return np.moveaxis(voxels, 3, 0)
    raise MedicalDataError(
        f"{uri} has shape {tuple(voxels.shape)}: an MSD image is (X, Y, Z) for one modality or "
        f"(X, Y, Z, C) for C modalities; re-export it in one of these shapes"
    )


def _label_volume(voxels: np.ndarray, uri: str) -> np.ndarray:
    """``(X, Y, Z)`` (or ``(X, Y, Z, 1)``) class ids as int64."""
    if voxels.ndim == 4 and voxels.shape[3] == 1:
        voxels = voxels[..., 0]
    if voxels.ndim != 3:
        raise MedicalDataError(
            f"{uri} has shape {tuple(voxels.shape)}: an MSD label is (X, Y, Z), one class id "
            f"per voxel; re-export it as a 3-D volume"
        )
    if not np.issubdtype(voxels.dtype, np.integer):
        odd = voxels[~np.isfinite(voxels) | (voxels != np.round(voxels))]
        if odd.size:
            raise MedicalDataError(
                f"{uri} holds non-integer label values (e.g. {float(odd.flat[0]):g}): labels are "
                f"class ids; re-export it with integer voxels (nearest-neighbour resampling)"
            )
    return voxels.astype(np.int64)


def _read_case(image_uri: str, label_uri: str, files: _Files) -> MedicalCase:
    image = _channels_first(read_nifti(image_uri, files=files), image_uri).astype(np.float32)
    label = _label_volume(read_nifti(label_uri, files=files), label_uri)
    if image.shape[1:] != label.shape:
        raise MedicalDataError(
            f"{image_uri} has spatial shape {tuple(image.shape[1:])} but its label {label_uri} has "
            f"{tuple(label.shape)}: the label must cover the image voxel for voxel (re-export one "
            f"of them on the other's grid)"
        )
    return MedicalCase(name=_case_name(image_uri), image=image, label=label)


def load_cases(path: str, *, limit: int | None = None) -> list[MedicalCase]:
    """The labelled cases of an MSD dataset, in ``"training"`` order.

    Args:
        path: The ``dataset.json`` or its folder, local or ``gs://``.
        limit: Read at most this many cases (the first); all if ``None``.

    Returns:
        One ``MedicalCase`` per case: image float32 ``(C, X, Y, Z)``, label int64 ``(X, Y, Z)``.

    Raises:
        MedicalDataError: The dataset or a case cannot be read, or a case's image and label
            differ in shape (the message says what to fix).
        FileNotFoundError: A listed file does not exist.
        ImportError: nibabel is not installed.
    """
    files = _Files()
    dataset = read_dataset(path, files=files)
    cases = dataset.cases if limit is None else dataset.cases[: max(0, limit)]
    return [_read_case(image, label, files) for image, label in cases]


def fit_volume(
    image: np.ndarray, label: np.ndarray, size: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resizes a case to ``size`` voxels a side (or to the ``(D, H, W)`` given).

    The image is interpolated linearly (``scipy.ndimage.zoom`` order 1, corners aligned), the
    label by nearest neighbour (order 0, so class ids stay class ids). A case already of that
    shape is returned as is (converted to float32 / int64).

    Args:
        image: ``(C, D, H, W)``.
        label: ``(D, H, W)``, the same spatial shape.
        size: The side of the output cube, or its three sides.

    Returns:
        ``(image float32 (C, *size), label int64 (*size))``.

    Raises:
        ValueError: The shapes do not fit together or ``size`` is not positive.
    """
    target = (int(size),) * 3 if isinstance(size, int | np.integer) else tuple(map(int, size))
    if len(target) != 3 or min(target) < 1:
        raise ValueError(f"size must be a positive side or three of them, got {size!r}")
    if image.ndim != 4 or label.ndim != 3 or image.shape[1:] != label.shape:
        raise ValueError(
            f"need an image (C, D, H, W) and a label (D, H, W) of the same spatial shape, got "
            f"{tuple(image.shape)} and {tuple(label.shape)}"
        )
    image = image.astype(np.float32, copy=False)
    label = label.astype(np.int64, copy=False)
    if tuple(label.shape) == target:
        return image, label
    from scipy import ndimage  # resizing needs it; reading and checking do not

    zoom = [t / s for t, s in zip(target, label.shape, strict=True)]
    resized = np.stack(
        [ndimage.zoom(channel, zoom, order=1, mode="nearest") for channel in image]
    ).astype(np.float32, copy=False)
    fitted_label = ndimage.zoom(label, zoom, order=0, mode="nearest")
    if resized.shape[1:] != target or fitted_label.shape != target:  # rounding of the zoom
        raise AssertionError(f"zoom gave {resized.shape[1:]} for {target}")
    return resized, fitted_label.astype(np.int64, copy=False)


def medical3d_data_problems(task: TaskSpec, data: DataSpec, *, max_cases: int = 4) -> list[str]:
    """What is wrong with an experiment's MSD data, as messages that say what to fix.

    Args:
        task: The task: ``num_classes`` counts the classes with the background;
            ``task.options["in_channels"]`` (default 1) is the number of image channels.
        data: ``data.train`` and ``data.validation``: each a ``dataset.json`` or its folder.
        max_cases: At most this many cases (the first) are read per split.

    Returns:
        One message per problem; empty when the data looks right.
    """
    in_channels = task.options.get("in_channels", 1)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        return [
            f"task.options.in_channels is {in_channels!r}: give the number of image channels "
            f'(modalities), a positive integer like 1 (the length of dataset.json\'s "modality")'
        ]
    files = _Files()
    problems: list[str] = []
    for split in SPLITS:
        spec = getattr(data, split)
        if not spec:
            problems.append(
                f"data.{split} is empty: give an MSD dataset.json (or the folder holding it), "
                f"or {MAKE_DATA_HINT}"
            )
            continue
        try:
            dataset = read_dataset(spec, files=files)
        except MedicalDataError as e:
            problems.append(f"data.{split}: {e}")
            continue
        problems.extend(_dataset_problems(dataset, task, in_channels, files, max_cases))
    return problems


def _dataset_problems(
    dataset: MsdDataset, task: TaskSpec, in_channels: int, files: _Files, max_cases: int
) -> list[str]:
    problems = _declared_problems(dataset, task, in_channels)
    uris = [uri for case in dataset.cases for uri in case]
    try:
        missing = set(files.missing(uris, _folder_of(dataset.path)))
    except (OSError, ValueError) as e:
        return [*problems, f"{dataset.path}: the listed files cannot be looked up: {e}"]
    if missing:
        named = ", ".join(sorted(missing)[:_MAX_NAMED])
        more = f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else ""
        problems.append(
            f'{dataset.path}: {len(missing)} of the {len(uris)} files its "training" list names '
            f"do not exist: {named}{more}; fix the paths (relative to the folder of "
            f"dataset.json) or add the files"
        )
    try:
        _nibabel()
    except ImportError as e:
        return [*problems, str(e)]
    readable = [case for case in dataset.cases if not missing.intersection(case)]
    channels_told = False  # one channel message per dataset is enough
    bad_labels: dict[str, np.ndarray] = {}  # label file -> its values outside the classes
    num_read = 0
    for image_uri, label_uri in readable[:max_cases]:
        try:
            case = _read_case(image_uri, label_uri, files)
        except FileNotFoundError as e:  # removed since the lookup
            problems.append(f"{e.filename or image_uri} does not exist (listed in {dataset.path})")
            continue
        except MedicalDataError as e:
            problems.append(str(e))
            continue
        num_read += 1
        if not channels_told:
            message = _channel_problem(dataset, image_uri, case.image.shape[0], in_channels)
            if message:
                problems.append(message)
                channels_told = True
        values = np.unique(case.label)
        outside = values[(values < 0) | (values >= task.num_classes)]
        if outside.size:
            bad_labels[label_uri] = outside
    if bad_labels:
        problems.append(_label_problem(bad_labels, num_read, task))
    return problems


def _declared_problems(dataset: MsdDataset, task: TaskSpec, in_channels: int) -> list[str]:
    """The ``labels`` and ``modality`` entries against the task."""
    problems = []
    labels = dataset.labels
    if labels is not None:
        ids = sorted(labels, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
        if ids != [str(i) for i in range(len(labels))]:
            problems.append(
                f'{dataset.path}: "labels" has the keys {", ".join(ids)}; the MSD layout numbers '
                f'the classes "0" (background), "1", ... without gaps: fix dataset.json'
            )
        elif len(labels) != task.num_classes:
            names = ", ".join(f"{k}={labels[k]}" for k in ids)
            problems.append(
                f"{dataset.path} lists {len(labels)} labels ({names}) but task.num_classes is "
                f"{task.num_classes} (classes including the background): set task.num_classes to "
                f"{len(labels)}"
            )
    modalities = dataset.modalities
    if modalities is not None and len(modalities) != in_channels:
        names = ", ".join(f"{k}={v}" for k, v in modalities.items())
        problems.append(
            f"{dataset.path} lists {_modalities(len(modalities))} ({names}) but the task takes "
            f"{in_channels} input channel(s): set task.options.in_channels to {len(modalities)}"
        )
    return problems


def _modalities(count: int) -> str:
    return f"{count} modalit{'y' if count == 1 else 'ies'}"


def _channel_problem(dataset: MsdDataset, image_uri: str, channels: int, in_channels: int) -> str:
    """An image's channel count against the declared modalities, or the task if none are."""
    modalities = dataset.modalities
    if modalities is not None and channels != len(modalities):
        return (
            f"{image_uri}: {channels} channel(s) in the image but {dataset.path} lists "
            f'{_modalities(len(modalities))}: fix "modality" in dataset.json or the image'
        )
    if modalities is None and channels != in_channels:
        return (
            f"{image_uri}: {channels} channel(s) in the image but the task takes {in_channels}: "
            f"set task.options.in_channels to {channels}"
        )
    return ""


def _label_problem(bad: dict[str, np.ndarray], num_read: int, task: TaskSpec) -> str:
    """One message for the label files holding values outside ``0..task.num_classes - 1``."""
    values = np.unique(np.concatenate(list(bad.values())))
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if values.size > 8 else "")
    named = ", ".join(list(bad)[:_MAX_NAMED])
    if len(bad) > 1:
        more = f" and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
        named = f"{named}{more} ({len(bad)} of the {num_read} cases read)"
    fix = (
        f"set task.num_classes to {int(values.max()) + 1} or fix the labels"
        if values.min() >= 0
        else "fix the labels (class ids count from 0, the background)"
    )
    return (
        f"{named}: label value(s) {shown} outside 0..{task.num_classes - 1} "
        f"(task.num_classes = {task.num_classes}, including the background 0): {fix}"
    )


__all__ = [
    "DATASET_FILE",
    "MAKE_DATA_HINT",
    "MedicalCase",
    "MedicalDataError",
    "MsdDataset",
    "dataset_json_path",
    "fit_volume",
    "load_cases",
    "medical3d_data_problems",
    "read_dataset",
    "read_nifti",
]
