"""Commands on one experiment, run in this process.

They are validate, init, propose, make-data, convert-kitti, trial, search, trials and demo. Each
handler only parses, calls the library (mostly ``kfnas.stages``) and prints. To add a command:
write ``_run_<name>`` (and ``_add_<name>``) and add one entry to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from kfnas.cli import _common as ui
from kfnas.config.spec import ExperimentSpec, SpecError
from kfnas.records.trial import TrialResult, TrialSpec
from kfnas.views.rows import CORRUPT, PENDING, measure_cells, measure_headers


def _run_validate(args: argparse.Namespace) -> int:
    from kfnas.validation import experiment_spec

    spec = experiment_spec(ui.spec_text(args.spec), args.overrides)
    ui.console.print_json(spec.to_json())
    ui.console.print(f"[green]{args.spec} is valid[/green]")
    return 0


def _run_init(args: argparse.Namespace) -> int:
    from kfnas.stages import init_experiment

    ui.console.print(init_experiment(ui.spec_text(args.spec), args.overrides))
    return 0


def _add_propose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment URI printed by `kfnas init`")
    parser.add_argument("--study", default="proxy", help="study name (default: proxy)")
    parser.add_argument("--round", type=int, required=True, help="round to propose, from 1")


def _run_propose(args: argparse.Namespace) -> int:
    from kfnas.stages import propose_trials

    ids = propose_trials(args.experiment, args.study, args.round)
    ui.console.print(" ".join(map(str, ids)))
    return 0


def _add_make_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind",
        help="task kind of the data: detection, segmentation, classification, lidar_detection "
        "(or lidar), segmentation_3d (or medical3d: volumes in the Medical Segmentation "
        "Decathlon layout)",
    )
    parser.add_argument("--out", required=True, help="folder to write the data into")
    parser.add_argument(
        "--train",
        type=int,
        default=128,
        help="training images, LiDAR scenes or volumes (default 128)",
    )
    parser.add_argument("--validation", type=int, default=32, help="validation images/scenes (32)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=64,
        help="image side in pixels; for lidar, the bird's-eye-view grid side in 0.4 m pillars; "
        "for medical3d, the volume side in voxels (64)",
    )
    parser.add_argument("--classes", type=int, default=3, help="number of classes (3)")
    parser.add_argument("--seed", type=int, default=0, help="seed; same seed, same bytes (0)")


def _run_make_data(args: argparse.Namespace) -> int:
    from kfnas.data import GENERATORS

    files = GENERATORS.get(args.kind)(
        args.out,
        num_train=args.train,
        num_validation=args.validation,
        image_size=args.image_size,
        num_classes=args.classes,
        seed=args.seed,
    )
    ui.console.print(f"train:       {files.train_pattern}")
    ui.console.print(f"validation:  {files.validation_pattern}")
    if files.annotations:
        ui.console.print(f"annotations: {files.annotations}")
    return 0


def _add_convert_kitti(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root",
        help="KITTI object folder holding velodyne/, label_2/ and calib/ (in it or in its "
        "training/ folder)",
    )
    parser.add_argument("--out", required=True, help="folder to write the LiDAR TFRecords into")
    parser.add_argument(
        "--validation-share",
        type=float,
        default=0.2,
        help="share of the frames for the validation split (0.2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (0)")


def _run_convert_kitti(args: argparse.Namespace) -> int:
    from kfnas.data.kitti import convert_kitti

    try:
        files = convert_kitti(
            args.root, args.out, validation_share=args.validation_share, seed=args.seed
        )
    except ValueError as e:  # KittiError included: it names the file and what to fix.
        ui.console.print("[red]error:[/red] ", end="")
        ui.console.print(str(e), soft_wrap=True, markup=False)
        return 2
    ui.console.print(f"train:       {files.train_pattern}")
    ui.console.print(f"validation:  {files.validation_pattern}")
    return 0


def _add_trial(parser: argparse.ArgumentParser) -> None:
    ui.add_spec_args(parser)
    parser.add_argument("--study", default="proxy", help="the study whose space is used (proxy)")
    parser.add_argument(
        "--arch", help="architecture JSON file (a trial's arch_json); default: random"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random architecture (0)")
    parser.add_argument(
        "--out",
        default="kfnas-trial",
        help="folder for checkpoint and logs; a previous trial there is replaced (kfnas-trial)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the trial in --out from its checkpoint (the same architecture only)",
    )


def _checked_spec(args: argparse.Namespace) -> ExperimentSpec:
    from kfnas.config.spec import load_spec
    from kfnas.validation import check_data, validate

    spec = validate(load_spec(args.spec, args.overrides))
    check_data(spec)
    return spec


#: What ``kfnas trial`` records in its folder: the trial, and its architecture for ``--arch``.
TRIAL_RECORD, ARCH_RECORD = "trial.json", "architecture.json"


def _same_architecture(a: TrialSpec, b: TrialSpec) -> bool:
    """Whether two trials train the same network (JSON compared as data, not as text)."""
    try:
        return a.space == b.space and json.loads(a.arch_json) == json.loads(b.arch_json)
    except ValueError:
        return a.space == b.space and a.arch_json == b.arch_json


def _trial_folder(out: Path, trial: TrialSpec, resume: bool) -> str:
    """Prepares ``out`` for ``trial``: fresh, or (``resume``) the same trial's folder as it is.

    A fresh start removes a previous ``kfnas trial``'s outputs (its checkpoint would be restored
    into another network); a folder that holds other files is refused rather than cleared.

    Returns:
        What was done, for a person.

    Raises:
        SpecError: Nothing to resume, another architecture to resume, or a folder of other files.
    """
    from kfnas.training.runner import LOGS_DIR, MODEL_DIR

    record = out / TRIAL_RECORD
    if resume:
        if not record.is_file():
            raise SpecError(
                f"--resume: {out} holds no trial to resume (no {TRIAL_RECORD}); run without "
                f"--resume to start one there"
            )
        try:
            previous = TrialSpec.from_json(record.read_text())
        except ValueError as e:  # RecordError included
            raise SpecError(f"--resume: {record} is unreadable ({e}); run without --resume") from e
        if not _same_architecture(previous, trial):
            raise SpecError(
                f"--resume: {out} holds a trial of another architecture ({previous.space}, "
                f"{out / ARCH_RECORD}): resume that one with --arch {out / ARCH_RECORD} "
                f"--resume, or run without --resume to start this one fresh"
            )
        return f"Resuming the trial in {out} from its last checkpoint"
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and not record.is_file():
        raise SpecError(
            f"--out {out} holds files that are not a kfnas trial's ({', '.join(entries[:5])}): "
            f"give a new or empty folder"
        )
    for name in (MODEL_DIR, LOGS_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(trial.to_json())
    (out / ARCH_RECORD).write_text(trial.arch_json)
    started = "the previous trial's model/ and logs/ removed" if entries else "a new folder"
    return f"Starting fresh in {out} ({started}; --resume continues a trial instead)"


def _run_trial(args: argparse.Namespace) -> int:
    from kfnas.training.runner import execute_trial, local_trial

    spec = _checked_spec(args)
    arch_json = Path(args.arch).read_text() if args.arch else None
    trial = local_trial(spec, args.study, arch_json=arch_json, seed=args.seed)
    out = Path(args.out)
    ui.console.print(_trial_folder(out, trial, args.resume))
    ui.console.print(f"Training one {trial.space} trial locally; outputs in {out}")
    result = execute_trial(spec, trial, out)
    ui.print_results({trial.trial_id: result}, spec.objectives.metric)
    if result.error:
        ui.console.print(f"[red]{result.status.value}:[/red] {result.error}")
    return 0 if result.completed else 1


def _add_search(parser: argparse.ArgumentParser) -> None:
    ui.add_spec_args(parser)
    parser.add_argument("--study", default="proxy", help="the study to run (proxy)")
    parser.add_argument("--top", type=int, default=3, help="how many best trials to list (3)")


def _run_search(args: argparse.Namespace) -> int:
    from kfnas.stages import init_experiment

    uri = init_experiment(ui.spec_text(args.spec), args.overrides)
    return _search(uri, args.study, args.top)


def _search(uri: str, study: str, top: int) -> int:
    """Runs ``study`` of the experiment in this process, printing each trial, then the best."""
    from kfnas.cli.local_study import run_study
    from kfnas.store import open_experiment

    exp = open_experiment(uri)
    metric = exp.spec.objectives.metric
    budget = exp.spec.study(study).budget
    assert budget is not None
    ui.console.print(
        f"Experiment {uri}: study {study!r}, {budget.rounds} rounds x "
        f"{budget.trials_per_round} trials, {budget.train_steps} steps each"
    )

    def progress(round_index: int, trial_id: int, result: TrialResult) -> None:
        value = result.metrics.get(metric)
        shown = f"{metric} {value:.3f}" if value is not None else result.error
        reward = f"reward {result.reward:.4f}" if result.reward is not None else ""
        ui.console.print(
            f"  round {round_index} trial {trial_id}: {result.status.value} {shown} {reward}"
            f" ({result.duration_s:.0f} s)"
        )

    run = run_study(uri, study, top_k=top, progress=progress)
    ui.print_results({i: run.results[i] for i in run.top}, metric, title="Best trials by reward")
    best = exp.layout.trial_dir(study, run.top[0])
    ui.console.print(f"Best architecture: {exp.store.uri(best)}/trial.json (arch_json)")
    ui.console.print(f"Results: {exp.store.uri(exp.layout.study_dir(study))}")
    ui.console.print(
        f"TensorBoard: tensorboard --logdir {exp.store.uri(exp.layout.trials_dir(study))}"
    )
    return 0


def _add_trials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment URI (<store_root>/<name>)")
    parser.add_argument("--study", default="proxy", help="the study to list (default: proxy)")
    ui.add_json_flag(parser, "JSON Lines (one object per trial)")


def _run_trials(args: argparse.Namespace) -> int:
    from kfnas.views.listing import list_trials

    rows = list_trials(args.experiment, args.study)
    if args.json:
        ui.print_json([row.to_dict() for row in rows], lines=True)
        return 0
    metric = rows[0].metric if rows else "metric"
    sources = any(r.source for r in rows)
    headers = ["id", "round", "status", *measure_headers(metric), "duration"]
    headers += ["retrains"] if sources else []
    cells = [
        [
            str(r.trial_id),
            str(r.round),
            r.status,
            *measure_cells(r),
            f"{r.duration_s:.0f} s" if r.status not in (PENDING, CORRUPT) else "-",
            *([r.source] if sources else []),
        ]
        for r in rows
    ]
    ui.print_table(headers, cells, title=f"Study {args.study}: {len(rows)} trials")
    for r in rows:
        if r.error:  # markup=False: the error is a record's text, its brackets no markup.
            ui.console.print(
                f"trial {r.trial_id}: {r.status}: {r.error}", soft_wrap=True, markup=False
            )
    return 0


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-output", help="folder for the demo's data and store")
    ui.add_overrides(parser, "the demo spec (src/kfnas/demo.yaml)")


def _run_demo(args: argparse.Namespace) -> int:
    from kfnas.config.settings import demo_spec_yaml
    from kfnas.stages import init_experiment

    ui.console.rule("kfnas demo: a SpineNet-MBConv proxy search for detection, in this process")
    overrides = ui.demo_overrides(Path(args.out).resolve(), step="1. ")
    uri = init_experiment(demo_spec_yaml(), [*overrides, *args.overrides])
    ui.console.print("2. Validated the spec and the data; wrote the resolved experiment.json")
    ui.console.print("3. Searching (each trial trains and evaluates a RetinaNet on the CPU):")
    status = _search(uri, "proxy", 3)
    ui.console.rule("Next")
    ui.console.print(
        "The same search as the KFP pipeline, with full training of the best, a report and the "
        "exported model: kfnas run demo. For a cluster: kfnas compile --profile gke-gpu -o "
        "pipeline.yaml, then upload pipeline.yaml in the KFP UI."
    )
    return status


COMMANDS = {
    "validate": ui.Command("check a spec and print it resolved", _run_validate, ui.add_spec_args),
    "init": ui.Command(
        "validate a spec and create the experiment in its store", _run_init, ui.add_spec_args
    ),
    "propose": ui.Command(
        "propose (or resume) one round of trials of a study", _run_propose, _add_propose
    ),
    "make-data": ui.Command(
        "write a generated dataset (TFRecords; COCO JSON for detection)",
        _run_make_data,
        _add_make_data,
    ),
    "convert-kitti": ui.Command(
        "convert KITTI 3-D object data into LiDAR scene TFRecords",
        _run_convert_kitti,
        _add_convert_kitti,
    ),
    "trial": ui.Command(
        "train one trial locally from a given or random architecture", _run_trial, _add_trial
    ),
    "search": ui.Command(
        "run a study in this process: propose, train, select", _run_search, _add_search
    ),
    "trials": ui.Command(
        "list a study's trials from the store (table or JSON)", _run_trials, _add_trials
    ),
    "demo": ui.Command("generate data and run a small search locally", _run_demo, _add_demo),
}
