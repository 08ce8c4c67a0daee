"""The search pipeline compiled with each cluster profile: what every step carries in the YAML.

Each built-in profile is compiled with 2 rounds, 2 trials per round, parallelism 2 and top 1. The
compiled YAML holds two documents: the pipeline spec, and the platform spec whose
``platforms.kubernetes.deploymentSpec.executors`` carries the Kubernetes settings per executor.
Every step is checked against the section of its kind (``training``, ``latency``: the measurement
steps, ``export``, ``light``, and ``controller``: the search steps get the ``light`` section
without its timeout); the proxy trials are Kubernetes Jobs the search steps create, whose settings
(the ``trial`` section) are the launch config compiled into them
(``tests/pipelines/test_trial_pods.py`` checks the Jobs).
"""

import dataclasses
import json
import re

import pytest
import yaml

from kfnas.cli import main
from kfnas.components._image import IMAGE
from kfnas.pipelines.compile import compile_pipeline, compile_proxy_tool, compile_retraining
from kfnas.pipelines.profiles import (
    ProfileError,
    StepProfile,
    load_profile,
    parse_profile,
    profile_names,
)

PROFILES = ["cpu-only", "gke-gpu", "nvidia-gpu"]


def test_the_built_in_profiles():
    assert profile_names() == PROFILES


@pytest.fixture(scope="module", params=PROFILES)
def compiled(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / f"{request.param}.yaml"
    compile_pipeline(request.param, 2, 2, 2, 1, path)
    spec, platform = yaml.safe_load_all(path.read_text())
    return load_profile(request.param), spec, platform


def _tasks(spec):
    """Every container step: (groups it is in, display name, task spec, executor label)."""

    def walk(dag, path):
        for task in dag["tasks"].values():
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                yield from walk(component["dag"], [*path, task["taskInfo"]["name"]])
            else:
                yield path, task["taskInfo"]["name"], task, component["executorLabel"]

    return list(walk(spec["root"]["dag"], []))


def _kind(name):
    if name.endswith(" search"):
        return "controller"
    if name.endswith(": measure"):
        return "latency"
    if name.endswith(" nodes)"):  # a multi-node full training, launched by a light step
        return "launcher"
    return {"full training": "training", "export": "export"}.get(name, "light")


def _section(profile, kind):
    """The profile section a kind of step gets (a controller or launcher: light, no timeout)."""
    if kind in ("controller", "launcher"):
        return dataclasses.replace(profile.step("light"), timeout_s=0)
    return profile.step(kind)


def _expected_platform(step: StepProfile) -> dict:
    """The platform spec kfp-kubernetes writes for a profile section."""
    out = {}
    if step.node_selector:
        out["nodeSelector"] = {"labels": step.node_selector}
    if step.tolerations:
        out["tolerations"] = [
            {
                k: v
                for k, v in {
                    "key": t.key,
                    "operator": t.operator,
                    "value": t.value,
                    "effect": t.effect,
                    "tolerationSeconds": t.toleration_seconds,
                }.items()
                if v not in ("", None)
            }
            for t in step.tolerations
        ]
    if step.volumes.pvcs:
        out["pvcMount"] = [
            {"mountPath": p.mount_path, "constant": p.claim, "subPath": p.sub_path}
            for p in step.volumes.pvcs
        ]
    if step.volumes.shm_size:
        out["emptyDirMounts"] = [
            {
                "medium": "Memory",
                "mountPath": "/dev/shm",
                "sizeLimit": step.volumes.shm_size,
                "volumeName": "dshm",
            }
        ]
    if step.secrets.as_env:
        out["secretAsEnv"] = [
            {
                "secretName": s.secret,
                "optional": s.optional,
                "keyToEnv": [{"secretKey": k, "envVar": v} for k, v in s.keys.items()],
            }
            for s in step.secrets.as_env
        ]
    if step.secrets.as_volume:
        out["secretAsVolume"] = [
            {"secretName": s.secret, "mountPath": s.mount_path, "optional": s.optional}
            for s in step.secrets.as_volume
        ]
    if step.timeout_s:
        out["activeDeadlineSeconds"] = str(step.timeout_s)
    if step.security_context is not None:
        c = step.security_context
        out["securityContext"] = {
            k: v
            for k, v in {
                "runAsUser": None if c.run_as_user is None else str(c.run_as_user),
                "runAsGroup": None if c.run_as_group is None else str(c.run_as_group),
                "runAsNonRoot": c.run_as_non_root,
            }.items()
            if v is not None
        }
    return out


def _actual_platform(config: dict) -> dict:
    """The platform spec of one executor, without the fields kfp-kubernetes duplicates."""
    out = dict(config)
    if "pvcMount" in out:
        out["pvcMount"] = [
            {
                "mountPath": m["mountPath"],
                "constant": m["pvcNameParameter"]["runtimeValue"]["constant"],
                "subPath": m.get("subPath", ""),
            }
            for m in out["pvcMount"]
        ]
    for key in ("secretAsEnv", "secretAsVolume"):
        if key in out:
            out[key] = [
                {k: v for k, v in s.items() if k != "secretNameParameter"} for s in out[key]
            ]
    return out


def _check_steps(profile, spec, platform, kind_of) -> set[str]:
    """Checks every step against its kind's profile section; returns the kinds seen."""
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    kinds = set()
    for path, name, task, label in _tasks(spec):
        kind = kind_of(name)
        kinds.add(kind)
        step = _section(profile, kind)
        container = executors[label]["container"]
        where = f"{profile.name}: {' / '.join([*path, name])} ({kind})"
        assert container["image"] == IMAGE, where
        resources = container.get("resources", {})
        if step.accelerator is None:
            assert "accelerator" not in resources, where
        else:
            accelerator = resources["accelerator"]
            assert accelerator["resourceType"] == step.accelerator.type, where
            assert accelerator["resourceCount"] == str(step.accelerator.count), where
        quantities = {
            "resourceCpuRequest": step.resources.cpu_request,
            "resourceCpuLimit": step.resources.cpu_limit,
            "resourceMemoryRequest": step.resources.memory_request,
            "resourceMemoryLimit": step.resources.memory_limit,
        }
        assert {k: resources.get(k, "") for k in quantities} == quantities, where
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert env == {**step.env, **step.runtime_env()}, where
        assert _actual_platform(k8s.get(label, {})) == _expected_platform(step), where
        retry = step.retries
        expected_retry = retry and {
            "maxRetryCount": retry.num_retries,
            "backoffDuration": retry.backoff_duration,
            "backoffFactor": retry.backoff_factor,
            "backoffMaxDuration": retry.backoff_max_duration,
        }
        assert task.get("retryPolicy") == expected_retry, where
        assert not task.get("cachingOptions", {}).get("enableCache"), where
    return kinds


def test_each_step_carries_exactly_its_kind_of_settings(compiled):
    profile, spec, platform = compiled
    kinds = _check_steps(profile, spec, platform, _kind)
    full = "launcher" if profile.multi_node() else "training"
    assert kinds == {"controller", full, "light", "export", "latency"}


def test_the_search_steps_carry_the_trial_jobs_settings(compiled):
    from kfnas.pipelines.trial_pods import launch_config

    profile, spec, _ = compiled
    searches = [task for _, name, task, _ in _tasks(spec) if _kind(name) == "controller"]
    assert len(searches) == 3
    for task in searches:
        constant = task["inputs"]["parameters"]["launch_config"]["runtimeValue"]["constant"]
        assert json.loads(constant) == launch_config(profile, IMAGE)


@pytest.mark.parametrize("name", PROFILES)
def test_the_retraining_pipeline_compiles_with_each_profile(name, tmp_path):
    path = compile_retraining(name, tmp_path / "retraining.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    assert spec["pipelineInfo"]["name"] == "kfnas-retraining"
    profile = load_profile(name)
    retraining = "retraining (2 nodes)" if profile.multi_node() else "retraining"
    names = sorted(n for _, n, _, _ in _tasks(spec))
    assert names == sorted(
        ["init retraining", "publish if not worse", retraining, "retraining: measure"]
    )

    def kind_of(step):
        return {"publish if not worse": "export"}.get(
            step, _kind(step.replace("retraining", "full training"))
        )

    kinds = _check_steps(profile, spec, platform, kind_of)
    full = "launcher" if profile.multi_node() else "training"
    assert kinds == {full, "light", "export", "latency"}
    tasks = {t["taskInfo"]["name"]: (k, t) for k, t in spec["root"]["dag"]["tasks"].items()}
    measure, publish = tasks["retraining: measure"][1], tasks["publish if not worse"][1]
    assert tasks[retraining][0] in measure["dependentTasks"]
    assert tasks["retraining: measure"][0] in publish["dependentTasks"]
    ids = measure["inputs"]["parameters"]
    (channel,) = ids["trial_ids"]["runtimeValue"]["constant"]
    assert channel == "{{$.inputs.parameters['pipelinechannel--init-retraining-trial_id']}}"
    source = ids["pipelinechannel--init-retraining-trial_id"]["taskOutputParameter"]
    assert source == {"producerTask": "init-retraining", "outputParameterKey": "trial_id"}


@pytest.mark.parametrize("name", PROFILES)
def test_the_variance_pipeline_compiles_with_each_profile(name, tmp_path):
    path = compile_proxy_tool("variance", name, 3, tmp_path / "variance.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    assert spec["pipelineInfo"]["name"] == "kfnas-proxy-variance"
    names = sorted(n for _, n, _, _ in _tasks(spec))
    assert names == ["init variance", "repeats", "variance report"]
    profile = load_profile(name)
    kinds = _check_steps(
        profile, spec, platform, lambda step: "controller" if step == "repeats" else "light"
    )
    assert kinds == {"controller", "light"}
    tasks = {t["taskInfo"]["name"]: (k, t) for k, t in spec["root"]["dag"]["tasks"].items()}
    assert tasks["repeats"][0] in tasks["variance report"][1]["dependentTasks"]
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["parallelism"]["defaultValue"] == 3
    assert parameters["repeats"]["defaultValue"] == 5
    launch = json.loads(
        tasks["repeats"][1]["inputs"]["parameters"]["launch_config"]["runtimeValue"]["constant"]
    )
    assert launch["kind"] == "kubernetes"  # the repeats run as the search's trial Jobs


@pytest.mark.parametrize("name", PROFILES)
def test_the_model_selection_pipeline_compiles_with_each_profile(name, tmp_path):
    path = compile_proxy_tool("selection", name, 4, tmp_path / "selection.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    assert spec["pipelineInfo"]["name"] == "kfnas-proxy-select"
    assert sorted(n for _, n, _, _ in _tasks(spec)) == ["init model selection", "select models"]
    kinds = _check_steps(
        load_profile(name),
        spec,
        platform,
        lambda step: "controller" if step == "select models" else "light",
    )
    assert kinds == {"controller", "light"}
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    defaults = [parameters[k]["defaultValue"] for k in ("models", "final_models", "parallelism")]
    assert defaults == [30, 10, 4]
    with pytest.raises(ValueError, match="no proxy-task tool 'search'"):
        compile_proxy_tool("search", name, 1, tmp_path / "x.yaml")


@pytest.mark.parametrize("name", PROFILES)
def test_the_proxy_search_pipeline_compiles_with_each_profile(name, tmp_path):
    path = compile_proxy_tool("proxy-search", name, 5, tmp_path / "proxy-search.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    assert spec["pipelineInfo"]["name"] == "kfnas-proxy-search"
    names = sorted(n for _, n, _, _ in _tasks(spec))
    assert names == ["init proxy search", "search proxy tasks"]
    kinds = _check_steps(
        load_profile(name),
        spec,
        platform,
        lambda step: "controller" if step == "search proxy tasks" else "light",
    )
    assert kinds == {"controller", "light"}
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in parameters["grid_yaml"]  # the grid is required
    defaults = {k: parameters[k].get("defaultValue") for k in parameters if k != "grid_yaml"}
    assert defaults == {
        "spec_yaml": "demo",
        "selection_uri": "",
        "target_correlation": 0.65,
        "target_accuracy": -1.0,
        "time_limit_hours": 3.0,
        "stop_if_slower": True,
        "latency_correlation": 0.65,
        "evaluations": 5,
        "parallelism": 5,
        "overrides": [],
    }
    tasks = {t["taskInfo"]["name"]: t for t in spec["root"]["dag"]["tasks"].values()}
    launch = json.loads(
        tasks["search proxy tasks"]["inputs"]["parameters"]["launch_config"]["runtimeValue"][
            "constant"
        ]
    )
    assert launch["kind"] == "kubernetes"  # the candidates' models train as trial Jobs


def test_light_and_export_steps_get_no_gpu_settings(compiled):
    _, spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    kinds = ("light", "controller", "export")
    light = [label for _, name, _, label in _tasks(spec) if _kind(name) in kinds]
    # init, 3 searches, select top, propose, select winner, report, propose, export
    assert len(light) == 10
    for label in light:
        assert "accelerator" not in executors[label]["container"].get("resources", {})
        config = k8s.get(label, {})
        assert "emptyDirMounts" not in config
        text = yaml.safe_dump([config.get("tolerations"), config.get("nodeSelector")])
        assert "gpu" not in text and "accelerator" not in text, label


def test_the_dag_chains_searches_validation_refinements_and_final_training(compiled):
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    by_name = {task["taskInfo"]["name"]: (key, task) for key, task in tasks.items()}
    assert set(by_name) == {
        "init experiment",
        "proxy search",
        "select top k",
        "validation: propose",
        "validation",
        "validation: measure",
        "scaling search",
        "augmentation search",
        "select the winner",
        "report",
        "final: propose",
        "final training",
        "final: measure",
        "export",
    }

    def after(name, upstream):
        return by_name[upstream][0] in by_name[name][1].get("dependentTasks", [])

    chain = [
        ("proxy search", "init experiment"),
        ("select top k", "proxy search"),
        ("validation: propose", "select top k"),
        ("validation", "validation: propose"),
        ("validation: measure", "validation"),
        ("scaling search", "validation: measure"),
        ("augmentation search", "scaling search"),
        ("select the winner", "augmentation search"),
        ("final: propose", "select the winner"),
        ("final training", "final: propose"),
        ("final: measure", "final training"),
        ("export", "final: measure"),
        ("report", "export"),  # last: it covers the final study and the exported model
    ]
    assert [pair for pair in chain if not after(*pair)] == []
    for study in ("validation", "final"):  # measures the ids its trainings trained
        propose = by_name[f"{study}: propose"][0]
        for name in (study if study == "validation" else "final training", f"{study}: measure"):
            source = by_name[name][1]["inputs"]["parameters"]["trial_ids"]["taskOutputParameter"]
            assert source == {"producerTask": propose, "outputParameterKey": "Output"}, name
    loops = {path[-1]: task["iteratorPolicy"]["parallelismLimit"] for path, task in _loops(spec)}
    assert loops == {"validation": 2, "final training": 2, "export": 1}


def test_the_compiled_pipeline_does_not_grow_with_rounds_or_trials(tmp_path):
    sizes = {}
    for rounds, trials in ((2, 3), (100, 20), (2000, 50)):
        path = compile_pipeline("gke-gpu", rounds, trials, 4, 2, tmp_path / f"{rounds}.yaml")
        spec, platform = yaml.safe_load_all(path.read_text())
        parameters = spec["root"]["inputDefinitions"]["parameters"]
        assert (
            parameters["rounds"]["defaultValue"],
            parameters["trials_per_round"]["defaultValue"],
        ) == (
            rounds,
            trials,
        )
        for name in ("rounds", "trials_per_round"):
            del parameters[name]["defaultValue"]
        assert f"{rounds} rounds of {trials} proxy trials" in spec["pipelineInfo"].pop(
            "description"
        )
        sizes[rounds] = (len(_tasks(spec)), spec, platform)
    (tasks, *rest), *others = sizes.values()
    assert tasks == 14
    assert all(other == (tasks, *rest) for other in others)  # the same pipeline but for 2 defaults


def _loops(spec):
    """Every ParallelFor: (the groups it is in, its task)."""

    def walk(dag, path):
        for task in dag["tasks"].values():
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                if "parameterIterator" in task:
                    yield path, task
                yield from walk(component["dag"], [*path, task["taskInfo"]["name"]])

    return list(walk(spec["root"]["dag"], []))


def test_pipeline_parameters_have_defaults_and_descriptions(compiled):
    _, spec, _ = compiled
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for name, parameter in parameters.items():
        assert parameter.get("isOptional") is True and "defaultValue" in parameter, name
        assert len(parameter.get("description", "")) > 10, name
    assert parameters["spec_yaml"]["defaultValue"] == "demo"
    assert parameters["trials_per_round"]["defaultValue"] == 2
    assert parameters["rounds"]["defaultValue"] == 2
    assert parameters["parallelism"]["defaultValue"] == 2
    assert parameters["top_k"]["defaultValue"] == 1
    assert parameters["overrides"]["defaultValue"] == []
    assert {"train_data", "proxy_train_steps", "full_train_steps", "latency_target_ms"} <= set(
        parameters
    )


def test_kfnas_compile_writes_the_yaml(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--profile", "cpu-only", "-o", str(out), "--rounds", "3"]) == 0
    spec, _ = yaml.safe_load_all(out.read_text())
    assert spec["root"]["inputDefinitions"]["parameters"]["rounds"]["defaultValue"] == 3
    assert IMAGE in capsys.readouterr().out
    assert main(["compile", "--profile", "no-such-cluster", "-o", str(out)]) == 2
    assert "built-in profile: cpu-only, gke-gpu, nvidia-gpu" in " ".join(
        capsys.readouterr().out.split()
    )


def test_kfnas_compile_shows_how_trials_and_full_trainings_train(tmp_path, capsys):
    assert main(["compile", "--profile", "nvidia-gpu", "-o", str(tmp_path / "p.yaml")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "proxy trials: 1 pod, 1 x nvidia.com/gpu (1 replica), float16" in out
    assert (
        "full trainings: 2 nodes of 4 x nvidia.com/gpu (8 replicas), float16, all-reduce "
        "hierarchical_copy; each a TrainJob (Kubeflow Trainer v2.3.0): the cluster needs it "
        "installed" in out
    )
    assert "kubectl apply -f pipelines/runtimes/kfnas-tensorflow.yaml" in out
    assert "latency: measured on nvidia-gpu (1 x nvidia.com/gpu, 4 threads)" in out
    assert main(["compile", "--profile", "gke-gpu", "-o", str(tmp_path / "g.yaml")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "full trainings: 1 pod, 2 x nvidia.com/gpu (2 replicas), bfloat16" in out
    assert "latency: measured on nvidia-l4 (1 x nvidia.com/gpu, 4 threads)" in out
    assert main(["compile", "--profile", "cpu-only", "-o", str(tmp_path / "c.yaml")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "latency: measured on cpu-4 (CPUs only, 4 threads), one model at a time" in out
    mine = tmp_path / "mine.yaml"
    mine.write_text(GOOD)
    assert main(["compile", "--profile", str(mine), "-o", str(tmp_path / "m.yaml")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "latency: measured on test-light (CPUs only, threads not pinned), one model at a time "
        "on a light node: name a latency section for your deployment target" in out
    )


GOOD = """
name: test
steps:
  trial: {accelerator: {type: nvidia.com/gpu}}
  training: {}
  light: {}
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("  light: {cpu: 2}", r"unknown key 'steps.light.cpu'"),
        ("", r"missing required key 'steps.light'"),
        ("  light: {resources: {memory_limit: 4GB}}", r"memory_limit '4GB' is not a quantity"),
        ("  light: {resources: {cpu_request: two}}", r"cpu_request 'two' is not a quantity"),
        (
            "  light: {tolerations: [{key: a, operator: Exists, value: b}]}",
            r"steps.light.tolerations.0: operator Exists takes no value",
        ),
        (
            "  light: {tolerations: [{key: a, operator: In}]}",
            r"steps.light.tolerations.0.operator must be one of Equal, Exists",
        ),
        ("  light: {volumes: {pvcs: [{claim: d, mount_path: data}]}}", "must be an absolute"),
        ("  light: {retries: {num_retries: 2, backoff_duration: 1m}}", "not a duration like"),
        (
            "  light: {security_context: {run_as_user: 0, run_as_non_root: true}}",
            "run_as_non_root contradicts run_as_user 0",
        ),
        ("  light: {secrets: {as_env: [{secret: s}]}}", "keys is empty"),
        ("  light: {timeout_s: -1}", "timeout_s must be >= 0"),
        ("  light: {precision: bfloat16}", r"steps.light does not train, so precision cannot"),
        (
            "  light: {}\n  export: {workers: 2, engine: trainer-v2}",
            r"steps.export does not train, so engine, workers cannot apply",
        ),
        ("  light: {}\n  latency: {threads: 2}", r"steps.latency.device is empty: name the"),
        (
            "  light: {}\n  latency: {device: NVIDIA L4}",
            r"steps.latency.device 'NVIDIA L4' is not a device name",
        ),
        (
            "  light: {device: cpu-4, threads: 4}",
            r"steps.light does not measure latency, so device, threads cannot apply: set them "
            r"in steps.latency",
        ),
        (
            "  light: {}\n  export: {threads: 4}",
            r"steps.export does not measure latency, so threads cannot apply",
        ),
        (
            "  light: {}\n  latency: {device: cpu-4, threads: -1}",
            r"steps.latency.threads must be >= 0 \(0: not pinned\), got -1",
        ),
        (
            "  light: {}\n  latency: {device: cpu-4, threads: 8, resources: {cpu_limit: '4'}}",
            r"steps.latency.threads 8 is more than steps.latency.resources.cpu_limit '4': lower "
            r"threads to at most 4, or raise steps.latency.resources.cpu_limit to at least 8",
        ),
        (
            "  light: {}\n  latency: {device: cpu-4, threads: 2, resources: {cpu_limit: 1500m}}",
            r"steps.latency.threads 2 is more than steps.latency.resources.cpu_limit '1500m'",
        ),
        (
            "  light: {}\n  latency: {device: cpu-4, precision: float16}",
            r"steps.latency does not train, so precision cannot apply",
        ),
    ],
)
def test_profile_problems_name_the_file_and_key(change, message):
    text = GOOD.replace("  light: {}", change)
    with pytest.raises(ProfileError, match=message) as e:
        parse_profile(text, source="my-profile.yaml")
    assert str(e.value).startswith("my-profile.yaml")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("training: {precision: float16}", "steps.training.precision float16 needs an accelerator"),
        ("trial: {precision: fp8}", "steps.trial.precision 'fp8' is not one of float32, float16"),
        ("training: {all_reduce: ring}", "all_reduce 'ring' is not one of hierarchical_copy, nccl"),
    ],
)
def test_how_a_section_trains_is_checked(section, message):
    text = (
        GOOD.replace("  training: {}", "  " + section)
        if "training" in section
        else (GOOD.replace("  trial: {accelerator: {type: nvidia.com/gpu}}", "  " + section))
    )
    with pytest.raises(ProfileError, match=re.escape(message)):
        parse_profile(text, source="p.yaml")


def test_a_profile_file_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    profile = load_profile(path)
    assert profile.step("trial").accelerator.count == 1
    assert profile.step("light").accelerator is None
    with pytest.raises(ProfileError, match="unknown kind of step 'gpu'"):
        profile.step("gpu")


def test_a_latency_section_sets_where_and_how_latency_is_measured():
    text = GOOD + "  latency: {device: cpu-n2-4, threads: 4, resources: {cpu_limit: '4'}}\n"
    step = parse_profile(text).step("latency")
    assert (step.device, step.threads) == ("cpu-n2-4", 4)
    assert step.runtime_env() == {"KFNAS_LATENCY_DEVICE": "cpu-n2-4", "KFNAS_LATENCY_THREADS": "4"}
    unpinned = parse_profile(GOOD + "  latency: {device: nvidia-l4}\n").step("latency")
    assert unpinned.runtime_env() == {"KFNAS_LATENCY_DEVICE": "nvidia-l4"}  # threads 0: unpinned
    assert parse_profile(GOOD).step("light").runtime_env() == {}


def test_without_a_latency_section_latency_is_measured_on_the_light_section():
    text = GOOD.replace("  light: {}", "  light: {resources: {cpu_limit: '2'}, timeout_s: 600}")
    profile = parse_profile(text.replace("name: test", "name: My_Cluster"))
    latency = profile.step("latency")
    assert latency == dataclasses.replace(profile.step("light"), device="my-cluster-light")
    assert latency.runtime_env() == {"KFNAS_LATENCY_DEVICE": "my-cluster-light"}
    long = parse_profile(text.replace("name: test", "name: " + "x" * 80)).step("latency").device
    assert len(long) == 63 and long.endswith("x-light")


def test_the_built_in_latency_sections_name_their_target_and_pin_its_cores():
    devices = {}
    for name in PROFILES:
        profile = load_profile(name)
        step = profile.step("latency")
        assert profile.steps.latency is step, name
        devices[name] = step.device
        resources = step.resources
        assert (step.threads, resources.cpu_request, resources.cpu_limit) == (4, "4", "4"), name
        assert resources.memory_request == resources.memory_limit, name  # Guaranteed QoS
        assert (step.accelerator is None) == (name == "cpu-only"), name
        assert step.accelerator is None or step.accelerator.count == 1, name
    assert devices == {"cpu-only": "cpu-4", "gke-gpu": "nvidia-l4", "nvidia-gpu": "nvidia-gpu"}
    gke = load_profile("gke-gpu").step("latency")
    assert gke.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}  # not spot
    assert all(t.key != "cloud.google.com/gke-spot" for t in gke.tolerations)


def test_export_steps_get_memory_sized_for_the_largest_model():
    for name in PROFILES:
        profile = load_profile(name)
        export, light = profile.step("export"), profile.step("light")
        assert export.accelerator is None, name
        assert _gib(export.resources.memory_limit) > _gib(light.resources.memory_limit), name
        assert export.timeout_s > light.timeout_s, name


def _gib(quantity: str) -> float:
    return float(quantity.removesuffix("Gi"))


def test_without_an_export_section_exports_get_the_training_section_without_its_gpu():
    text = GOOD.replace(
        "  training: {}",
        "  training: {accelerator: {type: nvidia.com/gpu, count: 4}, timeout_s: 86400,"
        " resources: {memory_limit: 64Gi}}",
    )
    profile = parse_profile(text)
    export = profile.step("export")
    assert export.accelerator is None
    assert (export.timeout_s, export.resources.memory_limit) == (86400, "64Gi")
    explicit = parse_profile(text + "  export: {timeout_s: 7200}\n").step("export")
    assert (explicit.timeout_s, explicit.resources.memory_limit) == (7200, "")
    with pytest.raises(ProfileError, match=r"steps.export.timeout_s must be >= 0"):
        parse_profile(text + "  export: {timeout_s: -1}\n")


_KEY = "{secrets: {as_volume: [{secret: my-gcs-key, mount_path: /var/secrets/google}]}%s}"


@pytest.mark.parametrize(
    "env",
    ["", ", env: {GOOGLE_APPLICATION_CREDENTIALS: /elsewhere/key.json}"],
)
def test_a_mounted_google_key_without_the_credentials_variable_is_refused(env):
    text = GOOD.replace("  light: {}", "  light: " + _KEY % env)
    with pytest.raises(ProfileError) as e:
        parse_profile(text, source="my-profile.yaml")
    message = " ".join(str(e.value).split())
    assert "steps.light.secrets.as_volume.0 mounts secret 'my-gcs-key'" in message
    assert "add env: {GOOGLE_APPLICATION_CREDENTIALS: /var/secrets/google/key.json}" in message
    fixed = ", env: {GOOGLE_APPLICATION_CREDENTIALS: /var/secrets/google/key.json}"
    assert parse_profile(GOOD.replace("  light: {}", "  light: " + _KEY % fixed))


def _mounts_point_the_client_at_the_key(where, secret_mounts, env):
    """Every step that mounts a secret as files sets the credentials variable under a mount."""
    if not secret_mounts:
        return
    path = env.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    assert any(path.startswith(m.rstrip("/") + "/") for m in secret_mounts), (where, path)


@pytest.mark.parametrize("name", PROFILES)
def test_every_step_that_mounts_credentials_points_the_client_at_them(name, tmp_path):
    """Compiled search and retraining pipelines, and the trial Jobs' launch config, per profile."""
    from kfnas.pipelines.trial_pods import launch_config

    mounted = 0
    search = compile_pipeline(name, 2, 2, 2, 1, tmp_path / "search.yaml")
    retraining = compile_retraining(name, tmp_path / "retraining.yaml")
    for path in (search, retraining):
        spec, platform = yaml.safe_load_all(path.read_text())
        executors = spec["deploymentSpec"]["executors"]
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for label, executor in executors.items():
            mounts = [s["mountPath"] for s in k8s.get(label, {}).get("secretAsVolume", [])]
            env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
            _mounts_point_the_client_at_the_key(f"{path.name}: {label}", mounts, env)
            mounted += bool(mounts)
    config = launch_config(load_profile(name), IMAGE)
    for kind, settings in config["settings"].items():
        mounts = [v["mount_path"] for v in settings["secret_volumes"]]
        _mounts_point_the_client_at_the_key(f"trial Jobs: {kind}", mounts, settings["env"])
        mounted += bool(mounts)
    assert mounted or name == "cpu-only"  # the GPU profiles mount a key: the check ran
