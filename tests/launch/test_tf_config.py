"""``TF_CONFIG``: read strictly, built for Trainer v2 nodes, and this process's role in it."""

import json

import pytest

from kfnas.launch.tf_config import (
    TF_CONFIG,
    ClusterConfigError,
    ClusterRole,
    cluster_role,
    prepare_tf_config,
    trainer_v2_tf_config,
)


def config(cluster, task):
    return {TF_CONFIG: json.dumps({"cluster": cluster, "task": task})}


def test_no_tf_config_is_one_process():
    assert cluster_role({}) is None
    assert cluster_role({TF_CONFIG: "  "}) is None


@pytest.mark.parametrize(
    ("cluster", "task", "role"),
    [
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, ("worker", 0, 2, True)),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, ("worker", 1, 2, False)),
        (
            {"chief": ["c:1"], "worker": ["a:1"]},
            {"type": "chief", "index": 0},
            ("chief", 0, 2, True),
        ),
        (
            {"chief": ["c:1"], "worker": ["a:1"]},
            {"type": "worker", "index": 0},
            ("worker", 0, 2, False),
        ),
    ],
)
def test_the_chief_is_the_chief_task_or_else_worker_0(cluster, task, role):
    assert cluster_role(config(cluster, task)) == ClusterRole(*role)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "has no cluster"),
        (
            json.dumps({"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "ps"}}),
            "names task types ps",
        ),
        (json.dumps({"cluster": {"worker": "a:1"}, "task": {}}), "must be a list of host:port"),
        (
            json.dumps(
                {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}
            ),
            "names this process nowhere",
        ),
        (
            json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}),
            "names this process nowhere",
        ),
        (json.dumps({"cluster": {"worker": ["a:1"]}}), "its task is missing"),
    ],
)
def test_a_bad_tf_config_is_refused_naming_the_problem(text, message):
    with pytest.raises(ClusterConfigError, match=message):
        cluster_role({TF_CONFIG: text})


TRAINER_ENV = {
    "KFNAS_CLUSTER": "trainer-v2",
    "KFNAS_JOB_NAME": "kfnas-exp-1a2b-final-3",
    "KFNAS_WORKERS": "3",
    "KFNAS_TF_PORT": "2345",
    "JOB_COMPLETION_INDEX": "2",
}


def test_a_trainer_v2_node_builds_its_tf_config_from_its_index_and_the_jobset_hosts():
    job = TRAINER_ENV["KFNAS_JOB_NAME"]
    assert trainer_v2_tf_config(TRAINER_ENV) == {
        "cluster": {"worker": [f"{job}-node-0-{i}.{job}:2345" for i in range(3)]},
        "task": {"type": "worker", "index": 2},
    }
    env = dict(TRAINER_ENV)
    assert prepare_tf_config(env) == ClusterRole("worker", 2, 3, False)
    assert json.loads(env[TF_CONFIG])["task"] == {"type": "worker", "index": 2}


def test_an_injected_tf_config_is_kept():
    env = {**TRAINER_ENV, **config({"worker": ["x:1"]}, {"type": "worker", "index": 0})}
    assert prepare_tf_config(env) == ClusterRole("worker", 0, 1, True)
    assert json.loads(env[TF_CONFIG])["cluster"] == {"worker": ["x:1"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"JOB_COMPLETION_INDEX": ""}, "JOB_COMPLETION_INDEX is not set"),
        ({"KFNAS_WORKERS": "two"}, "must be whole numbers"),
        ({"JOB_COMPLETION_INDEX": "3"}, "is not a node of this 3-node trial"),
    ],
)
def test_a_trainer_v2_node_without_its_variables_is_refused(change, message):
    with pytest.raises(ClusterConfigError, match=message):
        prepare_tf_config({**TRAINER_ENV, **change})
