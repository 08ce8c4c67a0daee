"""The ``kfnas`` command line.

Each command is one small handler function registered in ``_COMMANDS`` with its argument setup; the
handlers only parse, call the library (mostly ``kfnas.stages``) and print. Errors a user can fix
(a bad spec, an unknown name) print one clear message and exit with status 2, without a traceback.

To add a command: write ``_add_<name>(parser)`` and ``_run_<name>(args) -> int`` and add one entry
to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from kfnas.config.spec import ExperimentSpec, SpecError
from kfnas.records.trial import TrialResult
from kfnas.registry import RegistryError
from kfnas.version import __version__

console = Console(highlight=False)


def _add_overrides(parser: argparse.ArgumentParser, what: str = "the spec") -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"dotted override of {what}, e.g. --set budget.train_steps=50 (repeatable)",
    )


def _add_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment spec YAML file")
    _add_overrides(parser)


def _spec_text(path: str) -> str:
    if not Path(path).is_file():
        raise SpecError(f"spec file {path!r} does not exist")
    return Path(path).read_text()


def _add_spaces(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["show"], help="show one space's decisions")
    parser.add_argument("name", nargs="?", help="the space to show (with `show`)")


def _run_spaces(args: argparse.Namespace) -> int:
    import pyglove as pg

    from kfnas.spaces import SPACES, get_space

    if args.action == "show":
        if not args.name:
            raise SpecError("`kfnas spaces show` needs a space name: kfnas spaces show NAME")
        spec = pg.dna_spec(get_space(args.name).hyper())
        table = Table("decision", "choose", title=f"{args.name}: {spec.space_size} architectures")
        table.add_column("candidates", overflow="fold")
        for element in spec.elements:
            rule = f"{element.num_choices}" + (
                f" ({'distinct' if element.distinct else 'repeats'}"
                f"{', sorted' if element.sorted else ''})"
                if element.num_choices > 1
                else ""
            )
            values = ", ".join(str(v) for v in element.literal_values)
            table.add_row(str(element.id), rule, values)
        console.print(table)
        return 0

    table = Table("space", "tasks", "decisions", title="Search spaces")
    table.add_column("size", overflow="fold")
    for name in SPACES.names():
        space = SPACES.get(name)
        spec = pg.dna_spec(space.hyper())
        table.add_row(
            name, ", ".join(space.tasks), str(len(spec.decision_points)), str(spec.space_size)
        )
    console.print(table)
    return 0


def _run_algorithms(args: argparse.Namespace) -> int:
    from kfnas.search.algorithms import ALGORITHMS

    table = Table("algorithm", "objectives", "options (defaults)", title="Search algorithms")
    for name in ALGORITHMS.names():
        algorithm = ALGORITHMS.get(name)
        options = ", ".join(f"{k}={v}" for k, v in algorithm.options.items()) or "-"
        table.add_row(name, "two or more" if algorithm.multi_objective else "one", options)
    console.print(table)
    return 0


def _run_rewards(args: argparse.Namespace) -> int:
    from kfnas.search.rewards import REWARDS

    table = Table("reward", "what it computes", title="Rewards")
    for name in REWARDS.names():
        doc = (REWARDS.get(name).__doc__ or "").strip().splitlines()[0]
        table.add_row(name, doc)
    console.print(table)
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    from kfnas.validation import experiment_spec

    spec = experiment_spec(_spec_text(args.spec), args.overrides)
    console.print_json(spec.to_json())
    console.print(f"[green]{args.spec} is valid[/green]")
    return 0


def _run_init(args: argparse.Namespace) -> int:
    from kfnas.stages import init_experiment

    console.print(init_experiment(_spec_text(args.spec), args.overrides))
    return 0


def _add_propose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment URI printed by `kfnas init`")
    parser.add_argument("--study", default="proxy", help="study name (default: proxy)")
    parser.add_argument("--round", type=int, required=True, help="round to propose, from 1")


def _run_propose(args: argparse.Namespace) -> int:
    from kfnas.stages import propose_trials

    ids = propose_trials(args.experiment, args.study, args.round)
    console.print(" ".join(map(str, ids)))
    return 0


def _add_make_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="task kind of the data (kfnas make-data --help lists them)")
    parser.add_argument("--out", required=True, help="folder to write the TFRecords into")
    parser.add_argument("--train", type=int, default=128, help="training images (default 128)")
    parser.add_argument("--validation", type=int, default=32, help="validation images (32)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (64)")
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
    console.print(f"train:       {files.train_pattern}")
    console.print(f"validation:  {files.validation_pattern}")
    if files.annotations:
        console.print(f"annotations: {files.annotations}")
    return 0


def _add_trial(parser: argparse.ArgumentParser) -> None:
    _add_spec_args(parser)
    parser.add_argument("--study", default="proxy", help="the study whose space is used (proxy)")
    parser.add_argument(
        "--arch", help="architecture JSON file (a trial's arch_json); default: random"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random architecture (0)")
    parser.add_argument("--out", default="kfnas-trial", help="folder for checkpoint and logs")


def _run_trial(args: argparse.Namespace) -> int:
    from kfnas.training.runner import execute_trial, local_trial

    spec = _checked_spec(args)
    arch_json = Path(args.arch).read_text() if args.arch else None
    trial = local_trial(spec, args.study, arch_json=arch_json, seed=args.seed)
    console.print(f"Training one {trial.space} trial locally; outputs in {args.out}")
    result = execute_trial(spec, trial, args.out)
    _print_results({trial.trial_id: result}, spec.objectives.metric)
    if result.error:
        console.print(f"[red]{result.status.value}:[/red] {result.error}")
    return 0 if result.completed else 1


def _checked_spec(args: argparse.Namespace) -> ExperimentSpec:
    from kfnas.config.spec import load_spec
    from kfnas.validation import check_data, validate

    spec = validate(load_spec(args.spec, args.overrides))
    check_data(spec)
    return spec


def _add_search(parser: argparse.ArgumentParser) -> None:
    _add_spec_args(parser)
    parser.add_argument("--study", default="proxy", help="the study to run (proxy)")
    parser.add_argument("--top", type=int, default=3, help="how many best trials to list (3)")


def _run_search(args: argparse.Namespace) -> int:
    from kfnas.stages import init_experiment

    uri = init_experiment(_spec_text(args.spec), args.overrides)
    return _search(uri, args.study, args.top)


def _search(uri: str, study: str, top: int) -> int:
    from kfnas.cli.local_study import run_study
    from kfnas.store import open_experiment

    exp = open_experiment(uri)
    metric = exp.spec.objectives.metric
    budget = exp.spec.study(study).budget
    assert budget is not None
    console.print(
        f"Experiment {uri}: study {study!r}, {budget.rounds} rounds x "
        f"{budget.trials_per_round} trials, {budget.train_steps} steps each"
    )

    def progress(round_index: int, trial_id: int, result: TrialResult) -> None:
        value = result.metrics.get(metric)
        shown = f"{metric} {value:.3f}" if value is not None else result.error
        reward = f"reward {result.reward:.4f}" if result.reward is not None else ""
        console.print(
            f"  round {round_index} trial {trial_id}: {result.status.value} {shown} {reward}"
            f" ({result.duration_s:.0f} s)"
        )

    run = run_study(uri, study, top_k=top, progress=progress)
    _print_results({i: run.results[i] for i in run.top}, metric, title="Best trials by reward")
    best = exp.layout.trial_dir(study, run.top[0])
    console.print(f"Best architecture: {exp.store.uri(best)}/trial.json (arch_json)")
    console.print(f"Results: {exp.store.uri(exp.layout.study_dir(study))}")
    console.print(
        f"TensorBoard: tensorboard --logdir {exp.store.uri(exp.layout.trials_dir(study))}"
    )
    return 0


def _print_results(results: dict[int, TrialResult], metric: str, title: str = "") -> None:
    table = Table(
        "trial",
        "status",
        metric,
        "reward",
        "latency ms",
        "M mult-adds",
        "params",
        title=title or None,
    )
    for trial_id, r in results.items():
        m = r.metrics
        table.add_row(
            str(trial_id),
            r.status.value,
            f"{m[metric]:.4f}" if metric in m else "-",
            f"{r.reward:.4f}" if r.reward is not None else "-",
            f"{m['latency_ms']:.2f}" if "latency_ms" in m else "-",
            f"{m['flops'] / 1e6:.1f}" if "flops" in m else "-",
            f"{m['params']:,.0f}" if "params" in m else "-",
        )
    console.print(table)


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-output", help="folder for the demo's data and store")
    _add_overrides(parser, "the demo spec (src/kfnas/demo.yaml)")


def _run_demo(args: argparse.Namespace) -> int:
    from kfnas.data import write_detection_dataset
    from kfnas.stages import init_experiment

    out = Path(args.out).resolve()
    spec_yaml = importlib.resources.files("kfnas").joinpath("demo.yaml").read_text()
    console.rule("kfnas demo: a SpineNet-MBConv proxy search for detection, in this process")
    files = write_detection_dataset(out / "data", num_train=128, num_validation=32)
    console.print(f"1. Generated detection TFRecords and COCO annotations in {files.out_dir}")
    uri = init_experiment(
        spec_yaml,
        [
            f"store_root={out / 'store'}",
            f"data.train={files.train_pattern}",
            f"data.validation={files.validation_pattern}",
            f"data.annotations={files.annotations}",
            *args.overrides,
        ],
    )
    console.print("2. Validated the spec and the data; wrote the resolved experiment.json")
    console.print("3. Searching (each trial trains and evaluates a RetinaNet on the CPU):")
    status = _search(uri, "proxy", 3)
    console.rule("Next")
    console.print(
        "The same search as the KFP pipeline, with full training of the best, a report and the "
        "exported model: kfnas run demo. For a cluster: kfnas compile --profile gke-gpu -o "
        "pipeline.yaml, then upload pipeline.yaml in the KFP UI."
    )
    return status


def _add_counts(parser: argparse.ArgumentParser, *, from_spec: bool) -> None:
    default = "the spec's" if from_spec else None

    def helped(text: str, value: int) -> str:
        return f"{text} (default: {default or value})"

    parser.add_argument("--rounds", type=int, help=helped("rounds of the proxy search", 2))
    parser.add_argument("--trials", type=int, help=helped("trials per round", 3))
    parser.add_argument("--parallelism", type=int, default=2, help="trials at once (default 2)")
    parser.add_argument(
        "--top-k", type=int, default=1, help="proxy trials trained fully (default 1)"
    )


def _add_compile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        required=True,
        help="cluster profile: gke-gpu, nvidia-gpu, cpu-only, or a profile YAML file",
    )
    parser.add_argument("-o", "--output", required=True, help="pipeline YAML file to write")
    parser.add_argument(
        "--pipeline",
        choices=["search", "retraining"],
        default="search",
        help="the search (default) or the retraining pipeline (the counts apply to the search)",
    )
    _add_counts(parser, from_spec=False)


def _run_compile(args: argparse.Namespace) -> int:
    from kfnas.components._image import IMAGE, REGISTRY_ENV
    from kfnas.pipelines.compile import compile_pipeline, compile_retraining

    if args.pipeline == "retraining":
        path = compile_retraining(args.profile, args.output)
        console.print(f"Wrote {path}: the retraining pipeline, profile {args.profile}.")
        console.print(f"Image: {IMAGE} (set {REGISTRY_ENV} to compile for your registry)")
        return 0
    rounds, trials = args.rounds or 2, args.trials or 3
    path = compile_pipeline(args.profile, rounds, trials, args.parallelism, args.top_k, args.output)
    console.print(
        f"Wrote {path}: {rounds} rounds, parallelism {args.parallelism}, profile {args.profile}; "
        f"defaults {trials} trials per round, top {args.top_k}."
    )
    console.print(f"Image: {IMAGE} (set {REGISTRY_ENV} to compile for your registry)")
    console.print("Upload it in the KFP UI (Pipelines > Upload pipeline) and set the parameters.")
    return 0


def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec", help="experiment spec YAML file, or `demo` (generated data and the demo spec)"
    )
    _add_overrides(parser)
    _add_counts(parser, from_spec=True)
    parser.add_argument(
        "--out",
        default="kfnas-run",
        help="folder for KFP outputs and the step log (and the demo's data and store)",
    )
    parser.add_argument(
        "--model-version", default="v1", help="export folder of the final model (default v1)"
    )


def _run_run(args: argparse.Namespace) -> int:
    from kfnas.config.settings import ExperimentSettings
    from kfnas.config.studies import PROXY
    from kfnas.store import experiment_uri
    from kfnas.validation import check_data, experiment_spec

    out = Path(args.out).resolve()
    text, overrides = _run_inputs(args.spec, out)
    overrides += args.overrides
    spec = experiment_spec(text, overrides).study(PROXY)
    assert spec.budget is not None
    rounds, trials = args.rounds or spec.budget.rounds, args.trials or spec.budget.trials_per_round
    resolved = experiment_spec(
        text, overrides, ExperimentSettings(rounds=rounds, trials_per_round=trials)
    )
    check_data(resolved)  # Fail here, with the message alone, rather than in the first step.
    uri = experiment_uri(resolved)  # what init_experiment will create
    console.rule(f"kfnas run: the search pipeline under kfp.local, {rounds} rounds x {trials}")
    console.print(f"Experiment {uri}; step logs in {out / 'kfp.log'}")
    arguments = {"spec_yaml": text, "overrides": overrides, "trials_per_round": trials}
    arguments |= {"top_k": args.top_k, "model_version": args.model_version}
    out.mkdir(parents=True, exist_ok=True)
    # Open until the summary is printed: kfp.local's threads may log just after the run ends.
    with (out / "kfp.log").open("w") as log:
        if not _run_pipeline(uri, out, arguments, (rounds, args.parallelism), log):
            return 1
        _print_summary(uri, out, args.model_version)
    return 0


def _add_submit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="experiment spec YAML file (default: the demo's)")
    _add_overrides(parser)
    parser.add_argument("--host", help="KFP UI/API URL, e.g. http://localhost:8080 (or KFP_HOST)")
    parser.add_argument("--namespace", help="Kubernetes namespace of a multi-user KFP")
    parser.add_argument("--token", help="bearer token for the KFP API (or KFP_TOKEN)")
    parser.add_argument("--profile", help="cluster profile or profile YAML (default gke-gpu)")
    _add_counts(parser, from_spec=True)
    parser.add_argument("--experiment", help="KFP experiment of the run (default kfnas)")
    parser.add_argument("--pipeline-name", help="KFP pipeline to upload to (default kfnas-search)")
    parser.add_argument("--run-name", help="the run's name (default: spec name and time)")
    parser.add_argument("--params", help="YAML or JSON file: pipeline parameter -> value")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="(repeatable)"
    )
    parser.add_argument("--dry-run", action="store_true", help="compile and check; send nothing")


def _run_submit(args: argparse.Namespace) -> int:
    from kfnas.pipelines.parameters import load_params_file, parse_param_args
    from kfnas.pipelines.submit import SubmitSpec, prepare_submission, submit

    host, token = args.host or os.environ.get("KFP_HOST"), args.token or os.environ.get("KFP_TOKEN")
    if not host and not args.dry_run:
        raise SpecError("kfnas submit needs the KFP address: --host URL or KFP_HOST")
    options = {"profile": args.profile, "rounds": args.rounds, "trials_per_round": args.trials}
    options |= {"parallelism": args.parallelism, "top_k": args.top_k, "run_name": args.run_name}
    options |= {"pipeline_name": args.pipeline_name, "experiment": args.experiment}
    submission = prepare_submission(
        SubmitSpec(**{name: value for name, value in options.items() if value is not None}),
        load_params_file(args.params) if args.params else None,
        parse_param_args(args.param),
        _spec_text(args.spec) if args.spec else None,
        args.overrides,
    )
    for line in submission.summary():
        console.print(line, soft_wrap=True)
    if args.dry_run:
        console.print(f"Dry run: nothing was sent{' to ' + host if host else ''}.")
        return 0
    result = submit(submission, host, namespace=args.namespace, token=token)
    uploaded = "a new pipeline" if result.new_pipeline else "a new version"
    console.print(
        f"Uploaded {uploaded if result.new_version else 'nothing (same YAML)'}: pipeline "
        f"{result.pipeline_id}, version {result.pipeline_version_name}. Run {result.run_id}:"
    )
    console.print(result.run_url, soft_wrap=True)
    return 0


def _add_schedule(parser: argparse.ArgumentParser) -> None:
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--cron", help="when to retrain: KFP cron with seconds, e.g. '0 0 3 * * *' (03:00 daily)"
    )
    action.add_argument("--list", action="store_true", help="list the recurring runs")
    action.add_argument("--disable", metavar="ID", help="disable the recurring run ID")
    parser.add_argument("--handoff", help="model to retrain, e.g. gs://b/nas/EXP/export/latest")
    parser.add_argument("--host", help="KFP UI/API URL, e.g. http://localhost:8080 (or KFP_HOST)")
    parser.add_argument("--namespace", help="Kubernetes namespace of a multi-user KFP")
    parser.add_argument("--token", help="bearer token for the KFP API (or KFP_TOKEN)")
    parser.add_argument("--profile", help="cluster profile or profile YAML (default gke-gpu)")
    parser.add_argument("--experiment", help="KFP experiment of the runs (default kfnas)")
    parser.add_argument("--name", help="the recurring run's name (default: retrain HANDOFF)")
    parser.add_argument("--pipeline-name", help="KFP pipeline (default kfnas-retraining)")
    parser.add_argument("--max-concurrency", type=int, help="runs at once (default 1)")
    parser.add_argument("--catchup", action="store_true", help="start runs missed while paused")
    parser.add_argument("--params", help="YAML or JSON file: pipeline parameter -> value")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="(repeatable)"
    )
    parser.add_argument("--dry-run", action="store_true", help="compile and check; send nothing")


def _run_schedule(args: argparse.Namespace) -> int:
    from kfnas.pipelines import schedule as sched
    from kfnas.pipelines.parameters import load_params_file, parse_param_args

    host, token = args.host or os.environ.get("KFP_HOST"), args.token or os.environ.get("KFP_TOKEN")
    if args.cron is not None:
        if not args.handoff:
            raise SpecError("kfnas schedule --cron needs the model to retrain: --handoff URI")
        options = {"profile": args.profile, "experiment": args.experiment, "name": args.name}
        options |= {"pipeline_name": args.pipeline_name, "max_concurrency": args.max_concurrency}
        prepared = sched.prepare_schedule(
            sched.ScheduleSpec(
                args.cron,
                catchup=args.catchup,
                **{name: value for name, value in options.items() if value is not None},
            ),
            args.handoff,
            load_params_file(args.params) if args.params else None,
            parse_param_args(args.param),
        )
        for line in prepared.summary():
            console.print(line, soft_wrap=True)
        if args.dry_run:
            console.print("Dry run: nothing was sent.")
            return 0
    if not host:
        raise SpecError("kfnas schedule needs the KFP address: --host URL or KFP_HOST")
    if args.list:
        table = Table("name", "id", "cron", "status")
        for info in sched.list_schedules(host, args.namespace, token):
            table.add_row(info.name, info.recurring_run_id, info.cron, info.status)
        console.print(table)
    elif args.disable:
        sched.disable_schedule(host, args.disable, args.namespace, token)
        console.print(f"Disabled recurring run {args.disable}: it starts no new runs.")
    else:
        info = sched.create_schedule(prepared, host, args.namespace, token)
        console.print(f"Created recurring run {info.name!r} ({info.recurring_run_id}): {info.cron}")
    return 0


def _run_inputs(spec: str, out: Path) -> tuple[str, list[str]]:
    """The spec text and base overrides of ``kfnas run``: a file, or the demo on generated data."""
    if spec != "demo" or Path(spec).is_file():
        return _spec_text(spec), []
    from kfnas.data import write_detection_dataset

    files = write_detection_dataset(out / "data", num_train=128, num_validation=32)
    console.print(f"Generated detection TFRecords and COCO annotations in {files.out_dir}")
    return "demo", [
        f"store_root={out / 'store'}",
        f"data.train={files.train_pattern}",
        f"data.validation={files.validation_pattern}",
        f"data.annotations={files.annotations}",
    ]


def _run_pipeline(
    uri: str, out: Path, arguments: dict, counts: tuple[int, int], log: TextIO
) -> bool:
    """Runs the pipeline while a thread prints what appears in the store; False if it failed.

    ``counts`` are the compile-time rounds and parallelism; the steps' logs go to ``log``.
    """
    from kfnas.pipelines.local import run_search_locally
    from kfnas.views.watch import StoreWatcher

    watcher, done = StoreWatcher(uri), threading.Event()
    progress = Console(file=console.file, width=console.width, highlight=False)

    def follow() -> None:
        while not done.wait(1.0):
            for line in watcher.poll():
                progress.print(f"  {line}")

    rounds, parallelism = counts
    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        run_search_locally(
            arguments,
            rounds=rounds,
            trials_per_round=arguments["trials_per_round"],
            parallelism=parallelism,
            top_k=arguments["top_k"],
            pipeline_root=out / "kfp",
            log_file=log,
        )
    except RuntimeError as e:
        log.flush()
        tail = "\n".join(Path(log.name).read_text().splitlines()[-15:])
        console.print(f"[red]The pipeline failed:[/red] {e}\nEnd of {log.name}:\n{tail}")
        return False
    finally:
        done.set()
        thread.join()
        for line in watcher.poll():
            progress.print(f"  {line}")
    return True


def _print_summary(uri: str, out: Path, model_version: str) -> None:
    from kfnas.config.studies import FINAL, PROXY, VALIDATION
    from kfnas.store import open_experiment

    exp = open_experiment(uri)
    metric = exp.spec.objectives.metric
    for study in (PROXY, VALIDATION, FINAL):
        results = {s.trial_id: r for s, r in exp.records.history(study) if r is not None}
        _print_results(results, metric, title=f"Study {study}")
    (final, result), *_ = [(s, r) for s, r in exp.records.history(FINAL) if r is not None]
    chain = [f"{FINAL} trial {final.trial_id}"]
    source = final
    while source.source_trial is not None:
        chain.append(f"{source.source_study} trial {source.source_trial}")
        source = exp.records.read_spec(source.source_study, source.source_trial)
    console.print(f"Best architecture: {' <- '.join(chain)}")
    console.print(f"  {exp.store.uri(exp.layout.trial_spec(FINAL, final.trial_id))} (arch_json)")
    from kfnas.views.watch import describe_result

    console.print(f"  {describe_result(result, metric)}")
    console.print(f"Report: {exp.store.uri(exp.layout.report_html())}")
    console.print(f"Exported model: {exp.store.uri(exp.layout.export_dir(model_version))}")
    console.print(f"KFP outputs (metrics, report artifacts): {out / 'kfp'}")


def _add_trials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment URI (<store_root>/<name>)")
    parser.add_argument("--study", default="proxy", help="the study to list (default: proxy)")
    parser.add_argument("--json", action="store_true", help="print JSON lines, one per trial")


def _run_trials(args: argparse.Namespace) -> int:
    import json

    from kfnas.views.listing import PENDING, list_trials

    rows = list_trials(args.experiment, args.study)
    if args.json:
        for row in rows:
            console.out(json.dumps(row.to_dict()), highlight=False)
        return 0
    metric = rows[0].metric if rows else "metric"
    sources = any(r.source for r in rows)
    table = Table(title=f"Study {args.study}: {len(rows)} trials")
    for name in ("id", "round", "status", metric, "reward", "latency ms", "M mult-adds", "params"):
        table.add_column(name, overflow="fold")
    table.add_column("duration", overflow="fold")
    if sources:
        table.add_column("retrains", overflow="fold")
    for r in rows:
        table.add_row(
            str(r.trial_id),
            str(r.round),
            r.status,
            f"{r.value:.4f}" if r.value is not None else "-",
            f"{r.reward:.4f}" if r.reward is not None else "-",
            f"{r.latency_ms:.2f}" if r.latency_ms is not None else "-",
            f"{r.flops / 1e6:.1f}" if r.flops is not None else "-",
            f"{r.params:,.0f}" if r.params is not None else "-",
            f"{r.duration_s:.0f} s" if r.status != PENDING else "-",
            *([r.source] if sources else []),
        )
    console.print(table)
    for r in rows:
        if r.error:
            console.print(f"trial {r.trial_id}: {r.status}: {r.error}", soft_wrap=True)
    return 0


_Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None, _Handler]] = {
    "spaces": ("list the search spaces, or `show NAME` its decisions", _add_spaces, _run_spaces),
    "algorithms": ("list the search algorithms and their options", None, _run_algorithms),
    "rewards": ("list the reward functions", None, _run_rewards),
    "validate": ("check a spec and print it resolved", _add_spec_args, _run_validate),
    "init": ("validate a spec and create the experiment in its store", _add_spec_args, _run_init),
    "propose": ("propose (or resume) one round of trials of a study", _add_propose, _run_propose),
    "make-data": (
        "write a generated dataset (TFRecords + COCO JSON)",
        _add_make_data,
        _run_make_data,
    ),
    "trial": (
        "train one trial locally from a given or random architecture",
        _add_trial,
        _run_trial,
    ),
    "search": ("run a study in this process: propose, train, select", _add_search, _run_search),
    "trials": ("list a study's trials from the store (table or JSON)", _add_trials, _run_trials),
    "demo": ("generate data and run a small search locally", _add_demo, _run_demo),
    "compile": (
        "compile the search pipeline for a cluster profile into KFP YAML",
        _add_compile,
        _run_compile,
    ),
    "run": (
        "run the whole search pipeline locally under kfp.local",
        _add_run,
        _run_run,
    ),
    "submit": ("upload the search pipeline to KFP and start a run", _add_submit, _run_submit),
    "schedule": (
        "create (--cron), list or disable recurring retraining runs on KFP",
        _add_schedule,
        _run_schedule,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all commands."""
    parser = argparse.ArgumentParser(prog="kfnas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kfnas {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if add_args is not None:
            add_args(sub)
    return parser


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's C++ and deprecation chatter off a person's console (errors still show)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # Python errors still surface in full.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``kfnas`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    try:
        return _COMMANDS[args.command][2](args)
    except (SpecError, RegistryError) as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
