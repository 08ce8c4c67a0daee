"""Commands on the KFP pipelines: compile, run (under ``kfp.local``), submit and schedule.

Only this group imports ``kfnas.pipelines`` (kfp), inside its handlers. ``submit`` and
``schedule`` share the KFP address (``--host``/``KFP_HOST``, ``--namespace``, ``--token``/
``KFP_TOKEN``, ``--insecure``: a token over plain http to another machine), ``--profile`` and the
run arguments (``--params``, ``--param``, ``--dry-run``).
To add a command: write ``_run_<name>`` (and ``_add_<name>``) and add one entry to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from kfnas.cli import _common as ui
from kfnas.config.spec import SpecError


def _add_counts(parser: argparse.ArgumentParser, *, from_spec: bool) -> None:
    default = "the spec's" if from_spec else None

    def helped(text: str, value: int) -> str:
        return f"{text} (default: {default or value})"

    parser.add_argument("--rounds", type=int, help=helped("rounds of the proxy search", 2))
    parser.add_argument("--trials", type=int, help=helped("trials per round", 3))
    parser.add_argument(
        "--parallelism", type=int, default=2, help="trial slots kept busy (default 2)"
    )
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
        choices=["search", "retraining", "variance", "selection", "proxy-search"],
        default="search",
        help="the search (default), the retraining, or a proxy-task tool's pipeline (variance, "
        "selection, proxy-search); the counts apply to the search, --parallelism also to the "
        "tools",
    )
    _add_counts(parser, from_spec=False)


def _run_compile(args: argparse.Namespace) -> int:
    from kfnas.components._image import IMAGE, REGISTRY_ENV
    from kfnas.pipelines.compile import compile_pipeline, compile_proxy_tool, compile_retraining
    from kfnas.pipelines.proxy import PROXY_TOOLS

    if args.pipeline in PROXY_TOOLS:
        path = compile_proxy_tool(args.pipeline, args.profile, args.parallelism, args.output)
        ui.console.print(
            f"Wrote {path}: the proxy-task {args.pipeline} pipeline, profile {args.profile}, "
            f"parallelism {args.parallelism}; its trainings run as the search's trial Jobs."
        )
        ui.console.print(f"Image: {IMAGE} (set {REGISTRY_ENV} to compile for your registry)")
        return 0
    if args.pipeline == "retraining":
        path = compile_retraining(args.profile, args.output)
        ui.console.print(f"Wrote {path}: the retraining pipeline, profile {args.profile}.")
        ui.console.print(f"Image: {IMAGE} (set {REGISTRY_ENV} to compile for your registry)")
        _print_training(args.profile)
        return 0
    rounds, trials = args.rounds or 2, args.trials or 3
    path = compile_pipeline(args.profile, rounds, trials, args.parallelism, args.top_k, args.output)
    ui.console.print(
        f"Wrote {path}: profile {args.profile}; parameter defaults {rounds} rounds x {trials} "
        f"trials, parallelism {args.parallelism}, top {args.top_k}."
    )
    ui.console.print(f"Image: {IMAGE} (set {REGISTRY_ENV} to compile for your registry)")
    _print_training(args.profile)
    ui.console.print(
        "Upload it in the KFP UI (Pipelines > Upload pipeline) and set the parameters."
    )
    return 0


def _print_training(profile: str | None) -> None:
    """How the profile's trials and full trainings train (devices, precision, nodes, engine)."""
    from kfnas.pipelines.profiles import load_profile, training_summary

    if profile is not None:
        for line in training_summary(load_profile(profile)):
            ui.console.print(f"  {line}", soft_wrap=True)


def _add_run(parser: argparse.ArgumentParser) -> None:
    from kfnas.cli.dashboard import port_number

    parser.add_argument(
        "spec", help="experiment spec YAML file, or `demo` (generated data and the demo spec)"
    )
    ui.add_overrides(parser)
    _add_counts(parser, from_spec=True)
    parser.add_argument(
        "--out",
        default="kfnas-run",
        help="folder for KFP outputs and the step log (and the demo's data and store)",
    )
    parser.add_argument(
        "--model-version", default="v1", help="export folder of the final model (default v1)"
    )
    live = parser.add_mutually_exclusive_group()
    live.add_argument(
        "--dashboard-port",
        type=port_number,
        metavar="PORT",
        help="port of the live view on 127.0.0.1 (default 8765, or any free port when it is "
        "taken; 0: any free port)",
    )
    live.add_argument("--no-dashboard", action="store_true", help="serve no live view")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep serving the live view after the run, until Ctrl-C",
    )


def _run_inputs(spec: str, out: Path) -> tuple[str, list[str]]:
    """The spec text and base overrides of ``kfnas run``: a file, or the demo on generated data."""
    from kfnas.config.settings import DEMO

    if spec != DEMO or Path(spec).is_file():
        return ui.spec_text(spec), []
    return DEMO, ui.demo_overrides(out)


def _run_run(args: argparse.Namespace) -> int:
    from kfnas.cli.dashboard import serve_until_interrupted, start_live_view
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
    ui.console.rule(f"kfnas run: the search pipeline under kfp.local, {rounds} rounds x {trials}")
    ui.console.print(f"Experiment {uri}; step logs in {out / 'kfp.log'}")
    # The report page, served from the store while the run fills it (it waits for the experiment).
    live = None if args.no_dashboard else start_live_view(uri, args.dashboard_port)
    arguments = {"spec_yaml": text, "overrides": overrides, "trials_per_round": trials}
    arguments |= {"top_k": args.top_k, "model_version": args.model_version}
    out.mkdir(parents=True, exist_ok=True)
    try:
        # Open until the summary is printed: kfp.local's threads may log just after the run ends.
        with (out / "kfp.log").open("w") as log:
            status = 1
            if _run_pipeline(uri, out, arguments, (rounds, args.parallelism), log):
                _print_summary(uri, out, args.model_version)
                status = 0
        if live is not None and args.serve:
            serve_until_interrupted(live)
    finally:
        if live is not None:
            live.stop()
    return status


def _run_pipeline(
    uri: str, out: Path, arguments: dict, counts: tuple[int, int], log: TextIO
) -> bool:
    """Runs the pipeline while a thread prints what appears in the store; False if it failed.

    ``counts`` are the compile-time rounds and parallelism; the steps' logs go to ``log``.
    """
    from kfnas.pipelines.local import run_search_locally
    from kfnas.views.watch import StoreWatcher

    watcher, done = StoreWatcher(uri), threading.Event()
    progress = Console(file=ui.console.file, width=ui.console.width, highlight=False)

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
        ui.console.print(f"[red]The pipeline failed:[/red] {e}\nEnd of {log.name}:\n{tail}")
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
    from kfnas.views.rows import describe_result

    exp = open_experiment(uri)
    metric = exp.spec.objectives.metric
    for study in (PROXY, VALIDATION, FINAL):
        results = {s.trial_id: r for s, r in exp.records.history(study) if r is not None}
        ui.print_results(results, metric, title=f"Study {study}")
    (final, result), *_ = [(s, r) for s, r in exp.records.history(FINAL) if r is not None]
    chain = [f"{FINAL} trial {final.trial_id}"]
    source = final
    while source.source_trial is not None:
        chain.append(f"{source.source_study} trial {source.source_trial}")
        source = exp.records.read_spec(source.source_study, source.source_trial)
    ui.console.print(f"Best architecture: {' <- '.join(chain)}")
    ui.console.print(f"  {exp.store.uri(exp.layout.trial_spec(FINAL, final.trial_id))} (arch_json)")
    ui.console.print(f"  {describe_result(result, metric)}")
    ui.console.print(f"Report: {exp.store.uri(exp.layout.report_html())}")
    ui.console.print(f"Exported model: {exp.store.uri(exp.layout.export_dir(model_version))}")
    ui.console.print(f"KFP outputs (metrics, report artifacts): {out / 'kfp'}")


def _add_proxy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "tool",
        choices=["variance", "select", "search"],
        help="variance: train one architecture several times with the proxy setting and report "
        "how much its score and curve vary; select: choose reference models spread out in "
        "accuracy against latency, trained to the full budget; search: retrain those models "
        "under each proxy setting of a grid and find the cheapest that ranks them as full "
        "training does",
    )
    parser.add_argument("spec", help="search spec YAML file (its proxy study), or `demo`")
    ui.add_overrides(parser)
    variance = parser.add_argument_group("variance")
    variance.add_argument(
        "--repeats", type=int, default=5, help="trainings of the architecture (default 5)"
    )
    variance.add_argument(
        "--architecture",
        choices=["reference", "random"],
        help="the space's published reference (default when it has one) or a random one",
    )
    select = parser.add_argument_group("select")
    select.add_argument("--models", type=int, default=30, help="models drawn (default 30)")
    select.add_argument("--final", type=int, default=10, help="models kept (default 10)")
    select.add_argument(
        "--remove", type=int, default=5, help="models removed per iteration at most (default 5)"
    )
    search = parser.add_argument_group("search")
    search.add_argument(
        "--grid",
        help="the candidate proxy settings: a YAML file or inline YAML mapping spec keys to lists "
        "of values, e.g. '{task.image_size: [32, 64], studies.proxy.budget.train_steps: [100, "
        "200]}', or listing candidates (required)",
    )
    search.add_argument(
        "--selection", default="", help="model-selection experiment (default <name>-selection)"
    )
    search.add_argument(
        "--target-correlation", type=float, default=0.65, help="Kendall tau wanted (0.65)"
    )
    search.add_argument(
        "--target-accuracy",
        type=float,
        default=-1.0,
        help="a median proxy score that also counts as good (default: not used)",
    )
    search.add_argument(
        "--time-limit-hours", type=float, default=3.0, help="training hours per candidate (3)"
    )
    search.add_argument(
        "--keep-slower",
        action="store_true",
        help="train a candidate on when it needs more time than the best so far",
    )
    search.add_argument(
        "--latency-correlation",
        type=float,
        default=0.65,
        help="latency Kendall tau a good candidate needs when latencies are measured (0.65; -1: "
        "any)",
    )
    search.add_argument(
        "--evaluations", type=int, default=5, help="evaluations of each training (default 5)"
    )
    parser.add_argument("--parallelism", type=int, default=2, help="trainings at once (default 2)")
    parser.add_argument(
        "--out", default="kfnas-proxy", help="folder for KFP outputs, the step log (and demo data)"
    )


def _run_proxy(args: argparse.Namespace) -> int:
    from kfnas.pipelines.local import run_proxy_tool_locally
    from kfnas.search.model_selection import SelectionSchedule
    from kfnas.stages.proxy import variance_spec
    from kfnas.stages.proxy_search import plan_proxy_search
    from kfnas.stages.selection import selection_spec
    from kfnas.store import experiment_uri
    from kfnas.validation import check_data, experiment_spec

    out = Path(args.out).resolve()
    text, overrides = _run_inputs(args.spec, out)
    overrides += args.overrides
    search = experiment_spec(text, overrides)
    arguments: dict[str, Any] = {"spec_yaml": text, "overrides": overrides}
    arguments["parallelism"] = args.parallelism
    if args.tool == "variance":
        spec = variance_spec(search, args.repeats)
        arguments |= {"repeats": args.repeats, "architecture": args.architecture or ""}
        what = f"{args.repeats} repeats"
    elif args.tool == "search":
        arguments |= _proxy_search_arguments(args)
        own = {k: v for k, v in arguments.items() if k != "parallelism"}
        _, plan = plan_proxy_search(**own)  # every check, before any step
        spec = dataclasses.replace(search, name=f"{search.name}-proxy-search")
        what = f"{len(plan['candidates'])} candidates x {len(plan['references'])} models"
    else:
        spec = selection_spec(search, SelectionSchedule(args.models, args.final, args.remove))
        arguments |= {"models": args.models, "final_models": args.final}
        arguments["remove_per_iteration"] = args.remove
        what = f"{args.models} models down to {args.final}"
    if args.tool != "search":  # the search's candidates were checked with their data
        check_data(spec)  # Fail here, with the message alone, rather than in the first step.
    uri = experiment_uri(spec)
    ui.console.rule(f"kfnas proxy {args.tool}: {what} under kfp.local")
    ui.console.print(f"Experiment {uri}; step logs in {out / 'kfp.log'}")
    out.mkdir(parents=True, exist_ok=True)
    tool = {"variance": "variance", "select": "selection", "search": "proxy-search"}[args.tool]
    with (out / "kfp.log").open("w") as log:
        try:
            report = run_proxy_tool_locally(
                tool, arguments, pipeline_root=out / "kfp", log_file=log
            )
        except RuntimeError as e:
            log.flush()
            tail = "\n".join(Path(log.name).read_text().splitlines()[-15:])
            ui.console.print(f"[red]The pipeline failed:[/red] {e}\nEnd of {log.name}:\n{tail}")
            return 1
    {"variance": _print_variance, "selection": _print_selection}.get(tool, _print_search)(uri)
    ui.console.print(f"Report: {report}")
    return 0


def _reports_json(uri: str, name: str) -> dict[str, Any]:
    from kfnas.store import open_experiment

    exp = open_experiment(uri)
    return json.loads(exp.store.read_text(f"{exp.layout.reports_dir()}/{name}.json"))


def _print_variance(uri: str) -> None:
    summary = _reports_json(uri, "variance")
    for name, label in (("variance", "coefficient of variation"), ("smoothness", "smoothness")):
        value = summary["coefficient_of_variation" if name == "variance" else name]
        ok = summary[f"{name}_ok"]
        shown = "undefined" if value is None else f"{value:.4f}"
        ui.console.print(
            f"{label}: {shown} (threshold {summary[f'{name}_threshold']:g}): "
            f"{'good' if ok else 'too high' if value is not None else 'not measured'}; "
            f"{summary[f'{name}_advice']}"
        )
    ui.console.print(f"Page: {uri}/reports/variance.html")


def _print_selection(uri: str) -> None:
    report = _reports_json(uri, "model_selection")
    metric = report["metric"]
    table = Table(title="Selected reference models (full training)")
    for header in ("trial", "model", metric, "latency ms"):
        table.add_column(header)
    for row in report["selected"]:
        latency = row["latency_ms"]
        table.add_row(
            str(row["trial_id"]),
            str(row["model"]),
            f"{row[metric]:.4f}",
            "-" if latency is None else f"{latency:.2f}",
        )
    ui.console.print(table)
    ui.console.print(f"Page: {uri}/reports/model_selection.html")


def _proxy_search_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The proxy-search pipeline's own parameters from the command line."""
    if not args.grid:
        raise SpecError(
            "kfnas proxy search needs --grid: a YAML file or inline YAML of the candidate "
            "proxy settings, e.g. --grid '{task.image_size: [32, 64]}'"
        )
    grid = Path(args.grid)
    text = grid.read_text() if grid.is_file() else args.grid
    return {
        "grid_yaml": text,
        "selection_uri": args.selection,
        "target_correlation": args.target_correlation,
        "target_accuracy": args.target_accuracy,
        "time_limit_hours": args.time_limit_hours,
        "stop_if_slower": not args.keep_slower,
        "latency_correlation": args.latency_correlation,
        "evaluations": args.evaluations,
    }


def _print_search(uri: str) -> None:
    from kfnas.views.proxy_search import STATES

    report = _reports_json(uri, "proxy_search")
    table = Table(title="Candidate proxy tasks")
    for header in ("candidate", "settings", "ended", "steps needed", "seconds needed"):
        table.add_column(header)
    for row in report["candidates"]:
        steps, seconds = row["final_steps"], row["final_seconds"]
        table.add_row(
            row["name"],
            ", ".join(f"{k}={v}" for k, v in row["settings"].items()),
            STATES.get(row["state"], row["state"]),
            "-" if steps is None else f"{steps:.0f}",
            "-" if seconds is None else f"{seconds:.1f}",
        )
    ui.console.print(table)
    if report["best"] is None:
        ui.console.print("No candidate met a target: widen the grid or lower the target.")
    else:
        sets = " ".join(f"--set {o}" for o in report["best_overrides"])
        ui.console.print(f"Best proxy task: {report['best']}; search with: {sets}")
    ui.console.print(f"Page: {uri}/reports/proxy_search.html")


def _add_address(parser: argparse.ArgumentParser) -> None:
    """The KFP address and cluster profile, shared by submit and schedule."""
    parser.add_argument("--host", help="KFP UI/API URL, e.g. http://localhost:8080 (or KFP_HOST)")
    parser.add_argument("--namespace", help="Kubernetes namespace of a multi-user KFP")
    parser.add_argument("--token", help="bearer token for the KFP API (or KFP_TOKEN)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow sending the token over plain http to another machine (not localhost)",
    )
    parser.add_argument("--profile", help="cluster profile or profile YAML (default gke-gpu)")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The pipeline's run arguments and ``--dry-run``, shared by submit and schedule."""
    parser.add_argument("--params", help="YAML or JSON file: pipeline parameter -> value")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="(repeatable)"
    )
    parser.add_argument("--dry-run", action="store_true", help="compile and check; send nothing")


def _address(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The KFP host and token: the flags, else ``KFP_HOST`` and ``KFP_TOKEN``."""
    return args.host or os.environ.get("KFP_HOST"), args.token or os.environ.get("KFP_TOKEN")


def _run_arguments(args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The typed values of ``--params`` and the strings of ``--param``."""
    from kfnas.pipelines.parameters import load_params_file, parse_param_args

    return load_params_file(args.params) if args.params else None, parse_param_args(args.param)


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The options a person gave (the others keep their spec's defaults)."""
    return {name: value for name, value in options.items() if value is not None}


def _add_submit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", help="experiment spec YAML file (default: the demo's)")
    ui.add_overrides(parser)
    _add_address(parser)
    _add_counts(parser, from_spec=True)
    parser.add_argument("--experiment", help="KFP experiment of the run (default kfnas)")
    parser.add_argument("--pipeline-name", help="KFP pipeline to upload to (default kfnas-search)")
    parser.add_argument("--run-name", help="the run's name (default: spec name and time)")
    _add_run_arguments(parser)


def _run_submit(args: argparse.Namespace) -> int:
    from kfnas.pipelines.submit import SubmitSpec, prepare_submission, submit

    host, token = _address(args)
    if not host and not args.dry_run:
        raise SpecError("kfnas submit needs the KFP address: --host URL or KFP_HOST")
    options = {"profile": args.profile, "rounds": args.rounds, "trials_per_round": args.trials}
    options |= {"parallelism": args.parallelism, "top_k": args.top_k, "run_name": args.run_name}
    options |= {"pipeline_name": args.pipeline_name, "experiment": args.experiment}
    submission = prepare_submission(
        SubmitSpec(**_given(options)),
        *_run_arguments(args),
        ui.spec_text(args.spec) if args.spec else None,
        args.overrides,
    )
    for line in submission.summary():
        ui.console.print(line, soft_wrap=True)
    if args.dry_run:
        ui.console.print(f"Dry run: nothing was sent{' to ' + host if host else ''}.")
        return 0
    assert host is not None
    result = submit(submission, host, namespace=args.namespace, token=token, insecure=args.insecure)
    uploaded = "a new pipeline" if result.new_pipeline else "a new version"
    ui.console.print(
        f"Uploaded {uploaded if result.new_version else 'nothing (same YAML)'}: pipeline "
        f"{result.pipeline_id}, version {result.pipeline_version_name}. Run {result.run_id}:"
    )
    ui.console.print(result.run_url, soft_wrap=True)
    return 0


def _add_schedule(parser: argparse.ArgumentParser) -> None:
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--cron", help="when to retrain: KFP cron with seconds, e.g. '0 0 3 * * *' (03:00 daily)"
    )
    action.add_argument("--list", action="store_true", help="list the recurring runs")
    action.add_argument("--disable", metavar="ID", help="disable the recurring run ID")
    parser.add_argument("--handoff", help="model to retrain, e.g. gs://b/nas/EXP/export/latest")
    _add_address(parser)
    parser.add_argument("--experiment", help="KFP experiment of the runs (default kfnas)")
    parser.add_argument("--name", help="the recurring run's name (default: retrain HANDOFF)")
    parser.add_argument("--pipeline-name", help="KFP pipeline (default kfnas-retraining)")
    parser.add_argument("--max-concurrency", type=int, help="runs at once (default 1)")
    parser.add_argument("--catchup", action="store_true", help="start runs missed while paused")
    _add_run_arguments(parser)


def _run_schedule(args: argparse.Namespace) -> int:
    from kfnas.pipelines import schedule as sched

    host, token = _address(args)
    if args.cron is not None:
        if not args.handoff:
            raise SpecError("kfnas schedule --cron needs the model to retrain: --handoff URI")
        options = {"profile": args.profile, "experiment": args.experiment, "name": args.name}
        options |= {"pipeline_name": args.pipeline_name, "max_concurrency": args.max_concurrency}
        prepared = sched.prepare_schedule(
            sched.ScheduleSpec(args.cron, catchup=args.catchup, **_given(options)),
            args.handoff,
            *_run_arguments(args),
        )
        for line in prepared.summary():
            ui.console.print(line, soft_wrap=True)
        if args.dry_run:
            ui.console.print("Dry run: nothing was sent.")
            return 0
    if not host:
        raise SpecError("kfnas schedule needs the KFP address: --host URL or KFP_HOST")
    if args.list:
        table = Table("name", "id", "cron", "status")
        for info in sched.list_schedules(host, args.namespace, token, args.insecure):
            table.add_row(info.name, info.recurring_run_id, info.cron, info.status)
        ui.console.print(table)
    elif args.disable:
        sched.disable_schedule(host, args.disable, args.namespace, token, args.insecure)
        ui.console.print(f"Disabled recurring run {args.disable}: it starts no new runs.")
    else:
        info = sched.create_schedule(prepared, host, args.namespace, token, args.insecure)
        ui.console.print(
            f"Created recurring run {info.name!r} ({info.recurring_run_id}): {info.cron}"
        )
    return 0


COMMANDS = {
    "compile": ui.Command(
        "compile the search pipeline for a cluster profile into KFP YAML",
        _run_compile,
        _add_compile,
    ),
    "run": ui.Command("run the whole search pipeline locally under kfp.local", _run_run, _add_run),
    "proxy": ui.Command(
        "proxy-task design tools under kfp.local (variance: how much one architecture's score "
        "varies between trainings)",
        _run_proxy,
        _add_proxy,
    ),
    "submit": ui.Command(
        "upload the search pipeline to KFP and start a run", _run_submit, _add_submit
    ),
    "schedule": ui.Command(
        "create (--cron), list or disable recurring retraining runs on KFP",
        _run_schedule,
        _add_schedule,
    ),
}
