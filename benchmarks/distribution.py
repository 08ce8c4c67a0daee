"""What distributing a trial costs: one device vs two, one process vs two, measured side by side.

kfnas' smallest detection trial (RetinaNet around a SpineNet-MBConv backbone, 64 px generated
TFRecords, global batch ``--batch``) trained ``--steps`` steps on the CPU, in one run:

* **one device vs two**: in a child process whose CPU is split into two logical devices (set
  before TensorFlow starts), the same trial (same architecture, seed and global batch) is trained
  under the default strategy (one device) and under ``MirroredStrategy`` over both devices
  (``kfnas.training.distribution``), in alternating order ``--repeats`` times. Printed: steady
  steps per second each way, their ratio, and the final evaluation loss each way (the two
  trainings see the same examples per step, so it differs only by batch-norm statistics, which
  are per replica, and rounding);
* **one process vs two**: the trial's job (``python -m kfnas.stages.worker``) run once as a
  single process and once as two worker processes with a ``localhost`` ``TF_CONFIG``
  (``MultiWorkerMirroredStrategy``, as a two-node TrainJob or TFJob runs it). Printed: each wall
  time and the chief's steps per second.

On two CPU cores the point is correctness and overhead, not speed: two replicas share the same
cores, so a ratio near 1 means the strategy costs little; on GPUs each replica has its own device.

Run: ``.venv/bin/python benchmarks/distribution.py [--steps 40] [--batch 4] [--repeats 1]``; a few
minutes on two cores. The last line is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
name: {name}
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {{min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            head_num_convs: 1, head_num_filters: 16, validation_batch_size: 2,
            pre_nms_score_threshold: 0.0, max_num_detections: 10}}
studies:
  proxy: {{space: spinenet_mbconv, budget: {{rounds: 1, trials_per_round: 1}}}}
budget: {{train_steps: {steps}, batch_size: {batch}, latency_runs: 5}}
seed: 1
"""


def _experiment(store: str, name: str, args: argparse.Namespace, data: list[str]) -> str:
    from kfnas import stages

    spec = SPEC.format(name=name, steps=args.steps, batch=args.batch)
    uri = stages.init_experiment(spec, [f"store_root={store}", *data])
    stages.propose_trials(uri, "proxy", 1)
    return uri


def devices_child(args: argparse.Namespace) -> None:
    """In this process: two logical CPU devices, then one device vs two, alternating."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    from kfnas.store import open_experiment
    from kfnas.training.distribution import Distribution, choose_distribution
    from kfnas.training.runner import execute_trial

    two = choose_distribution()
    one = Distribution(tf.distribute.get_strategy(), "one_device", 1)
    exp = open_experiment(args.uri)
    trial = exp.records.read_spec("proxy", 1)
    runs: dict[str, list[dict[str, float]]] = {"one": [], "two": []}
    for repeat in range(args.repeats):
        order = ("one", "two") if repeat % 2 == 0 else ("two", "one")
        for kind in order:
            with tempfile.TemporaryDirectory() as work:
                dist = one if kind == "one" else two
                result = execute_trial(exp.spec, trial, work, distribution=dist)
            if not result.completed:
                raise SystemExit(f"the {kind}-device run failed: {result.error}")
            runs[kind].append(result.metrics)
    print(json.dumps({"runs": runs, "two": two.record()}))


def one_vs_two_devices(uri: str, args: argparse.Namespace) -> dict[str, float]:
    """Runs ``devices_child`` in a process of its own; its figures."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", uri, *_forward(args)],
        capture_output=True,
        text=True,
        timeout=3600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""),
    )
    if done.returncode != 0:
        raise SystemExit(f"the two-device run failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["two"]["strategy"] != "mirrored" or report["two"]["replicas"] != "2":
        raise SystemExit(f"two logical devices were not used: {report['two']}")

    def median(kind: str, key: str) -> float:
        return statistics.median(m[key] for m in report["runs"][kind])

    one_speed, two_speed = (median(k, "train_steps_per_second") for k in ("one", "two"))
    return {
        "steps_per_second_one_device": one_speed,
        "steps_per_second_two_devices": two_speed,
        "two_over_one": two_speed / one_speed,
        "eval_loss_one_device": median("one", "loss"),
        "eval_loss_two_devices": median("two", "loss"),
    }


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _job(uri: str, workers: int) -> float:
    """Runs the trial's job as ``workers`` processes; the wall seconds until all ended."""
    hosts = [f"localhost:{port}" for port in _free_ports(workers)]
    processes = []
    start = time.perf_counter()
    for index in range(workers):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        if workers > 1:
            task = {"type": "worker", "index": index}
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts}, "task": task})
        command = [sys.executable, "-m", "kfnas.stages.worker", uri, "proxy", "1"]
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = [p.communicate(timeout=3600)[0] for p in processes]
    wall = time.perf_counter() - start
    if any(p.returncode for p in processes):
        raise SystemExit(f"a worker failed:\n{outputs[-1][-3000:].decode()}")
    return wall


def one_vs_two_processes(store: str, data: list[str], args: argparse.Namespace) -> dict:
    """The trial's job as one process and as two workers; wall times and the chief's speed."""
    from kfnas.store import open_experiment

    out: dict[str, float] = {}
    for workers in (1, 2):
        uri = _experiment(store, f"processes-{workers}", args, data)
        out[f"wall_seconds_{workers}_process"] = _job(uri, workers)
        result = open_experiment(uri).records.read_result("proxy", 1)
        if result is None or not result.completed:
            raise SystemExit(f"the {workers}-process trial did not complete: {result}")
        if workers == 2 and result.runtime.get("strategy") != "multi_worker_mirrored":
            raise SystemExit(f"two processes did not train together: {result.runtime}")
        out[f"steps_per_second_{workers}_process"] = result.metrics["train_steps_per_second"]
    return out


def _forward(args: argparse.Namespace) -> list[str]:
    return ["--steps", str(args.steps), "--batch", str(args.batch), "--repeats", str(args.repeats)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Runs both comparisons, prints them and the JSON summary; returns the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4, help="global batch (even: 2 replicas)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", metavar="URI", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.uri = args.child
        devices_child(args)
        return {}
    if args.batch % 2:
        parser.error("--batch must be even: it is split across 2 replicas")
    from kfnas.data.synthetic import write_detection_dataset

    with tempfile.TemporaryDirectory(prefix="kfnas-distribution-bench-") as work:
        files = write_detection_dataset(Path(work, "data"), num_train=16, num_validation=4)
        data = [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]
        data.append(f"data.annotations={files.annotations}")
        store = str(Path(work, "store"))
        devices = one_vs_two_devices(_experiment(store, "devices", args, data), args)
        processes = one_vs_two_processes(store, data, args)
    print(
        f"{args.steps}-step CPU training of the smallest detection trial, global batch {args.batch}"
    )
    print(
        f"  one logical device: {devices['steps_per_second_one_device']:.2f} steps/s; two "
        f"(mirrored): {devices['steps_per_second_two_devices']:.2f} steps/s "
        f"(two/one {devices['two_over_one']:.2f}); final eval loss "
        f"{devices['eval_loss_one_device']:.4f} vs {devices['eval_loss_two_devices']:.4f}"
    )
    print(
        f"  the trial's job: one process {processes['wall_seconds_1_process']:.1f} s wall "
        f"({processes['steps_per_second_1_process']:.2f} steps/s), two worker processes "
        f"(multi-worker mirrored) {processes['wall_seconds_2_process']:.1f} s wall "
        f"({processes['steps_per_second_2_process']:.2f} steps/s at the chief)"
    )
    summary = {**devices, **processes, "steps": args.steps, "batch": args.batch}
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
