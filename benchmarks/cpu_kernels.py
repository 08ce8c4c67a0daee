"""A demo proxy trial trained with oneDNN's CPU kernels and with TensorFlow's own, side by side.

Local trials train with TensorFlow's own (Eigen) CPU kernels (``kfnas.launch.warm.TRAINING_ENV``:
``TF_ENABLE_ONEDNN_OPTS=0``); TensorFlow's default on x86 is oneDNN. TensorFlow reads the
variable once, at import, so each setting runs the same proxy trial (the demo's spec and proxy
budget, the same architecture and seed) in a fresh process of its own, then measures it there by
the measurement protocol (with that process's kernels: the local measurement worker itself keeps
TensorFlow's default, oneDNN). Prints each phase, the steady step time, the trial's AP and the
model's batch-1 latency per setting, and the ratios Eigen / oneDNN.

Run: ``.venv/bin/python benchmarks/cpu_kernels.py``. The last line is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
SETTINGS = {"oneDNN": "1", "Eigen": "0"}
SHOWN = ("build", "setup", "first step", "loop", "evaluation", "teardown")


def run() -> None:
    """Runs the trial under each setting, each in a fresh process, and prints them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    sys.path.insert(0, str(HERE))
    import trial_fixed_cost as fixed_cost

    results = {}
    with tempfile.TemporaryDirectory(prefix="kfnas-cpu-kernels-") as tmp:
        root = Path(tmp)
        for name, value in SETTINGS.items():
            uri = fixed_cost._experiment(root / name)
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": value}
            results[name] = fixed_cost.fresh_trial("after", uri, root / f"{name}.json", env)
    for r in results.values():
        r["step ms"] = 1000 * r["loop"] / (r["steps"] - 1)
    print(f"{'':>18}" + "".join(f"{name:>10}" for name in SETTINGS) + f"{'ratio':>10}")
    rows = (*SHOWN, "step ms", "measurement step", "latency_ms")
    for row in rows:
        one, own = results["oneDNN"][row], results["Eigen"][row]
        ratio = own / one if one else float("nan")
        print(f"{row:>18}{one:10.2f}{own:10.2f}{ratio:10.2f}")
    print(f"{'AP':>18}" + "".join(f"{results[n]['AP']:10.4f}" for n in SETTINGS))
    summary = {
        f"{name}_{row.replace(' ', '_')}": round(results[name][row], 2)
        for name in SETTINGS
        for row in (*rows, "AP")
    }
    summary["step_ratio_eigen_over_onednn"] = round(
        results["Eigen"]["step ms"] / results["oneDNN"]["step ms"], 2
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    run()
