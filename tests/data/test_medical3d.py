"""Tests for the MSD-layout 3-D medical data: the synthetic writer, the reader and the checks."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kfnas.config.spec import DataSpec, TaskSpec
from kfnas.data.medical3d import (
    MedicalCase,
    MedicalDataError,
    fit_volume,
    load_cases,
    medical3d_data_problems,
)
from kfnas.data.synthetic import DatasetFiles
from kfnas.data.synthetic_medical3d import STRUCTURES, write_medical3d_dataset

nibabel = pytest.importorskip("nibabel")  # the torch extra; kfnas imports it lazily

SIZE = 16
NUM_CLASSES = 3  # background + 2 structures
TASK = TaskSpec(kind="segmentation_3d", num_classes=NUM_CLASSES, image_size=SIZE)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    out = tmp_path_factory.mktemp("medical3d")
    return write_medical3d_dataset(
        out, num_train=4, num_validation=2, image_size=SIZE, num_classes=NUM_CLASSES
    )


@pytest.fixture
def copy(files: DatasetFiles, tmp_path: Path) -> Path:
    """A writable copy of the generated dataset's training split."""
    folder = tmp_path / "train"
    shutil.copytree(Path(files.train[0]).parent, folder)
    return folder


def all_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def save_nifti(path: Path, voxels: np.ndarray) -> None:
    """Writes a NIfTI file the way users' tools do (nibabel.save, gzipped by the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(voxels, np.eye(4)), str(path))


def write_msd(
    folder: Path,
    cases: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    modality: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> Path:
    """A hand-written MSD dataset: ``imagesTr/NAME.nii.gz``, ``labelsTr/NAME.nii.gz``."""
    training = []
    for name, (image, label) in cases.items():
        save_nifti(folder / "imagesTr" / f"{name}.nii.gz", image)
        save_nifti(folder / "labelsTr" / f"{name}.nii.gz", label)
        training.append(
            {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
        )
    meta = {
        "name": "Hand",
        "modality": modality or {"0": "MRI"},
        "labels": labels or {"0": "background", "1": "a", "2": "b"},
        "numTraining": len(training),
        "training": training,
        "test": [],
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder / "dataset.json"


def set_training(folder: Path, training: object) -> None:
    meta = json.loads((folder / "dataset.json").read_text())
    meta["training"] = training
    (folder / "dataset.json").write_text(json.dumps(meta))


def problems_of(train: Path | str, task: TaskSpec = TASK, files: DatasetFiles | None = None):
    validation = files.validation[0] if files else str(train)
    return medical3d_data_problems(task, DataSpec(train=str(train), validation=validation))


# The writer.


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    kwargs = {"num_train": 3, "num_validation": 2, "image_size": 12, "num_classes": 4, "seed": 7}
    write_medical3d_dataset(tmp_path / "a", **kwargs)
    write_medical3d_dataset(tmp_path / "b", **kwargs)
    first, second = all_bytes(tmp_path / "a"), all_bytes(tmp_path / "b")
    assert first == second
    assert sorted(first) == [
        "train/dataset.json",
        *(f"train/{kind}/case_00{i}.nii.gz" for kind in ("imagesTr", "labelsTr") for i in range(3)),
        "validation/dataset.json",
        *(f"validation/{k}/case_00{i}.nii.gz" for k in ("imagesTr", "labelsTr") for i in range(2)),
    ]
    image = first["train/imagesTr/case_000.nii.gz"]
    assert image[:2] == b"\x1f\x8b" and image[4:8] == b"\0\0\0\0"  # gzip mtime 0
    write_medical3d_dataset(tmp_path / "c", **{**kwargs, "seed": 8})
    assert all_bytes(tmp_path / "c")["train/imagesTr/case_000.nii.gz"] != image


def test_writer_returns_the_dataset_json_paths(files: DatasetFiles) -> None:
    assert files.train == (str(Path(files.out_dir) / "train" / "dataset.json"),)
    assert files.validation == (str(Path(files.out_dir) / "validation" / "dataset.json"),)
    assert (files.annotations, files.num_classes, files.image_size) == ("", NUM_CLASSES, SIZE)
    assert files.class_names == ("background", *STRUCTURES[: NUM_CLASSES - 1])
    spec = files.data_spec()
    assert (spec.train, spec.validation) == (files.train[0], files.validation[0])
    meta = json.loads(Path(files.train[0]).read_text())
    assert meta["labels"] == {"0": "background", "1": "sphere", "2": "cube"}
    assert meta["modality"] == {"0": "MRI"}
    assert meta["numTraining"] == len(meta["training"]) == 4
    assert meta["training"][0] == {
        "image": "./imagesTr/case_000.nii.gz",
        "label": "./labelsTr/case_000.nii.gz",
    }


def test_writer_refuses_out_of_range_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="counts the background"):
        write_medical3d_dataset(tmp_path, num_classes=1)
    with pytest.raises(ValueError, match="image_size"):
        write_medical3d_dataset(tmp_path, image_size=4)


# The reader.


def test_load_cases_gives_channels_first_float_images_and_int_labels(files: DatasetFiles) -> None:
    cases = load_cases(files.train[0])
    assert [c.name for c in cases] == [f"case_00{i}" for i in range(4)]
    for case in cases:
        assert isinstance(case, MedicalCase)
        assert case.image.shape == (1, SIZE, SIZE, SIZE) and case.image.dtype == np.float32
        assert case.label.shape == (SIZE, SIZE, SIZE) and case.label.dtype == np.int64
        assert set(np.unique(case.label)) == set(range(NUM_CLASSES))  # every structure drawn
        for k in range(NUM_CLASSES):  # class k has mean intensity k: easy to learn
            assert abs(case.image[0][case.label == k].mean() - k) < 0.1
    assert len(load_cases(str(Path(files.train[0]).parent), limit=2)) == 2  # the folder works


def test_multi_channel_writer(tmp_path: Path) -> None:
    out = write_medical3d_dataset(
        tmp_path, num_train=1, num_validation=1, image_size=8, in_channels=2
    )
    assert json.loads(Path(out.train[0]).read_text())["modality"] == {"0": "T1", "1": "T2"}
    (case,) = load_cases(out.train[0])
    assert case.image.shape == (2, 8, 8, 8)
    task = TaskSpec(kind="segmentation_3d", num_classes=3, image_size=8, options={"in_channels": 2})
    assert medical3d_data_problems(task, out.data_spec()) == []


def test_a_hand_written_msd_dataset_with_two_modalities_is_read_as_it_is(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, size=(6, 5, 4, 2)).astype(np.int16)  # (X, Y, Z, modalities)
    label = np.zeros((6, 5, 4), dtype=np.uint8)
    label[1:3, 2:4, 1:3] = 1
    label[4, 0, 0] = 2
    path = write_msd(
        tmp_path / "Task05_Prostate",
        {"prostate_00": (image, label)},
        modality={"0": "T2", "1": "ADC"},
        labels={"0": "background", "1": "PZ", "2": "TZ"},
    )
    (case,) = load_cases(str(path))
    assert case.name == "prostate_00"
    assert case.image.shape == (2, 6, 5, 4) and case.image.dtype == np.float32
    np.testing.assert_array_equal(case.image[1], image[..., 1])
    np.testing.assert_array_equal(case.label, label)
    task = TaskSpec(kind="segmentation_3d", num_classes=3, image_size=8, options={"in_channels": 2})
    assert problems_of(path, task) == []


def test_uncompressed_nii_and_float_labels_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    image = np.ones((4, 4, 4), dtype=np.float32)
    label = np.zeros((4, 4, 4), dtype=np.float32)  # some MSD labels are stored as floats
    label[0] = 1
    save_nifti(folder / "imagesTr" / "a.nii", image)
    save_nifti(folder / "labelsTr" / "a.nii", label)
    (folder / "dataset.json").write_text(
        json.dumps({"training": [{"image": "imagesTr/a.nii", "label": "labelsTr/a.nii"}]})
    )
    (case,) = load_cases(str(folder))
    assert case.label.dtype == np.int64 and case.label.sum() == 16


def test_fit_volume_resizes_to_a_cube() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 20, 24, 28)).astype(np.float32)
    label = rng.integers(0, 3, size=(20, 24, 28))
    fitted_image, fitted_label = fit_volume(image, label, 16)
    assert fitted_image.shape == (2, 16, 16, 16) and fitted_image.dtype == np.float32
    assert fitted_label.shape == (16, 16, 16) and fitted_label.dtype == np.int64
    assert set(np.unique(fitted_label)) <= {0, 1, 2}  # nearest neighbour: no new class ids
    assert fitted_image[0, 0, 0, 0] == pytest.approx(image[0, 0, 0, 0])  # corners aligned
    same_image, same_label = fit_volume(fitted_image, fitted_label, 16)
    assert same_image is fitted_image and same_label is fitted_label
    with pytest.raises(ValueError, match="same spatial shape"):
        fit_volume(image, label[:-1], 16)


# The checks.


def test_generated_data_has_no_problems(files: DatasetFiles) -> None:
    assert medical3d_data_problems(TASK, files.data_spec()) == []


def test_volumes_of_another_size_than_the_task_are_fine(files: DatasetFiles) -> None:
    task = TaskSpec(kind="segmentation_3d", num_classes=NUM_CLASSES, image_size=64)
    assert medical3d_data_problems(task, files.data_spec()) == []


def test_empty_split(files: DatasetFiles) -> None:
    (message,) = medical3d_data_problems(TASK, DataSpec(train=files.train[0]))
    assert message.startswith("data.validation is empty")
    assert "kfnas make-data medical3d --out DIR" in message


def test_missing_dataset_json(tmp_path: Path, files: DatasetFiles) -> None:
    (message,) = problems_of(tmp_path / "nowhere", files=files)
    assert message.startswith("data.train: ")
    assert str(tmp_path / "nowhere" / "dataset.json") in message
    assert "does not exist" in message and "kfnas make-data medical3d --out DIR" in message


def test_dataset_json_that_is_not_json(tmp_path: Path, files: DatasetFiles) -> None:
    (tmp_path / "dataset.json").write_text("{not json")
    (message,) = problems_of(tmp_path / "dataset.json", files=files)
    assert "dataset.json is not valid JSON" in message and "fix it" in message


@pytest.mark.parametrize(("training", "words"), [([], "an empty"), (None, "no")])
def test_empty_training_list(copy: Path, files: DatasetFiles, training: object, words: str) -> None:
    meta = json.loads((copy / "dataset.json").read_text())
    if training is None:
        del meta["training"]
    else:
        meta["training"] = training
    (copy / "dataset.json").write_text(json.dumps(meta))
    (message,) = problems_of(copy, files=files)
    assert f'has {words} "training" list' in message
    assert str(copy / "dataset.json") in message and "./imagesTr/X.nii.gz" in message


def test_malformed_training_entry(copy: Path, files: DatasetFiles) -> None:
    set_training(copy, ["imagesTr/case_000.nii.gz"])
    (message,) = problems_of(copy, files=files)
    assert '"training" entry 0' in message and 'with "image" and "label" paths' in message


def test_listed_files_that_do_not_exist(copy: Path, files: DatasetFiles) -> None:
    (copy / "labelsTr" / "case_001.nii.gz").unlink()
    (message,) = problems_of(copy, files=files)
    assert "1 of the 8 files" in message and "do not exist" in message
    assert str(copy / "labelsTr" / "case_001.nii.gz") in message


def test_unreadable_nifti(copy: Path, files: DatasetFiles) -> None:
    bad = copy / "imagesTr" / "case_000.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all")
    (message,) = problems_of(copy, files=files)
    assert message.startswith(f"{bad} cannot be read as NIfTI (")
    assert "re-export it as .nii or .nii.gz" in message
    with pytest.raises(MedicalDataError, match="cannot be read as NIfTI"):
        load_cases(str(copy))


def test_truncated_gzip_nifti(copy: Path, files: DatasetFiles) -> None:
    bad = copy / "labelsTr" / "case_002.nii.gz"
    bad.write_bytes(gzip.compress(bad.read_bytes()[:20]))
    (message,) = problems_of(copy, files=files)
    assert message.startswith(f"{bad} cannot be read as NIfTI")


def test_image_and_label_shapes_differ(tmp_path: Path, files: DatasetFiles) -> None:
    path = write_msd(
        tmp_path, {"a": (np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 6), np.uint8))}
    )
    (message,) = problems_of(path, files=files)
    assert "has spatial shape (8, 8, 8) but its label" in message and "(8, 8, 6)" in message
    assert str(tmp_path / "imagesTr" / "a.nii.gz") in message


def test_label_values_outside_the_classes(tmp_path: Path, files: DatasetFiles) -> None:
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, 0], label[1, 1, 1] = 3, 5
    path = write_msd(tmp_path, {"a": (np.zeros((4, 4, 4), np.float32), label)})
    (message,) = problems_of(path, files=files)
    assert message.startswith(str(tmp_path / "labelsTr" / "a.nii.gz"))
    assert "label value(s) 3, 5 outside 0..2" in message
    assert "set task.num_classes to 6 or fix the labels" in message


def test_non_integer_labels(tmp_path: Path, files: DatasetFiles) -> None:
    label = np.zeros((4, 4, 4), np.float32)
    label[0, 0, 0] = 0.5
    path = write_msd(tmp_path, {"a": (np.zeros((4, 4, 4), np.float32), label)})
    (message,) = problems_of(path, files=files)
    assert "non-integer label values (e.g. 0.5)" in message


def test_modality_count_differs_from_in_channels(files: DatasetFiles) -> None:
    task = TaskSpec(kind="segmentation_3d", num_classes=NUM_CLASSES, options={"in_channels": 4})
    messages = medical3d_data_problems(task, files.data_spec())
    assert len(messages) == 2  # one per split
    assert "lists 1 modality (0=MRI) but the task takes 4 input channel(s)" in messages[0]
    assert "set task.options.in_channels to 1" in messages[0]


def test_image_channels_differ_from_the_modalities(tmp_path: Path, files: DatasetFiles) -> None:
    image = np.zeros((4, 4, 4, 3), np.float32)
    path = write_msd(tmp_path, {"a": (image, np.zeros((4, 4, 4), np.uint8))})
    (message,) = problems_of(path, files=files)
    assert "3 channel(s) in the image" in message and "lists 1 modality" in message


def test_labels_dict_differs_from_num_classes(files: DatasetFiles) -> None:
    task = TaskSpec(kind="segmentation_3d", num_classes=5)
    messages = medical3d_data_problems(task, files.data_spec())
    assert len(messages) == 2
    assert "lists 3 labels (0=background, 1=sphere, 2=cube)" in messages[0]
    assert "task.num_classes is 5" in messages[0] and "set task.num_classes to 3" in messages[0]


def test_gcs_round_trip(
    gcs_emulator: object, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)  # type: ignore[attr-defined]
    out = write_medical3d_dataset(
        f"gs://{gcs_bucket}/msd", num_train=2, num_validation=1, image_size=8
    )
    assert out.train == (f"gs://{gcs_bucket}/msd/train/dataset.json",)
    cases = load_cases(f"gs://{gcs_bucket}/msd/train")
    assert [c.image.shape for c in cases] == [(1, 8, 8, 8)] * 2
    task = TaskSpec(kind="segmentation_3d", num_classes=3, image_size=8)
    assert medical3d_data_problems(task, out.data_spec()) == []
    missing = DataSpec(train=f"gs://{gcs_bucket}/none", validation=out.validation[0])
    (message,) = medical3d_data_problems(task, missing)
    assert f"gs://{gcs_bucket}/none/dataset.json does not exist" in message


def test_image_channels_without_declared_modalities(tmp_path: Path, files: DatasetFiles) -> None:
    path = write_msd(
        tmp_path, {"a": (np.zeros((4, 4, 4, 2), np.float32), np.zeros((4, 4, 4), np.uint8))}
    )
    meta = json.loads(path.read_text())
    del meta["modality"]
    path.write_text(json.dumps(meta))
    (message,) = problems_of(path, files=files)
    assert "2 channel(s) in the image but the task takes 1" in message
    assert "set task.options.in_channels to 2" in message


def test_without_nibabel_the_message_says_what_to_install(
    files: DatasetFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "nibabel", None)  # makes `import nibabel` fail
    problems = medical3d_data_problems(TASK, files.data_spec())
    assert problems and all("pip install kfnas[torch]" in p for p in problems)
    with pytest.raises(ImportError, match=r"pip install kfnas\[torch\]"):
        load_cases(files.train[0])
    with pytest.raises(ImportError, match=r"pip install kfnas\[torch\]"):
        write_medical3d_dataset(tmp_path)


def test_importing_the_data_modules_loads_neither_nibabel_torch_nor_tensorflow() -> None:
    code = (
        "import sys, kfnas.data.medical3d, kfnas.data.synthetic_medical3d; "
        "print(sorted({'nibabel', 'torch', 'tensorflow', 'scipy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_in_channels_that_is_not_a_count(files: DatasetFiles) -> None:
    task = TaskSpec(kind="segmentation_3d", num_classes=NUM_CLASSES, options={"in_channels": "2"})
    (message,) = medical3d_data_problems(task, files.data_spec())
    assert message.startswith("task.options.in_channels is '2'")
