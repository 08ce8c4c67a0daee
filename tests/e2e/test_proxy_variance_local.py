"""``kfnas proxy variance`` under ``kfp.local``: one architecture trained twice, its spread.

The smallest real run: MnasNet's reference architecture at 32 px, batch 2, 5 steps with an
evaluation at each, trained twice by the search controller (local subprocesses, measured by the
local measurement worker) from a classification spec, then the variance report step. Checks the
coefficient of variation recomputed from the stored curves, the verdicts printed, and the HTML
page in the store and among the KFP outputs.
"""

import json
import os
import statistics

import pytest
from shared_fixtures import data_overrides

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.cli import main
from kfnas.stages.proxy import VARIANCE
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow, pytest.mark.tf]

SPEC = """
name: variance-e2e
task:
  kind: classification
  num_classes: 3
  image_size: 32
  options: {endpoints_num_filters: 16}
studies:
  proxy: {space: mnasnet}
budget: {train_steps: 5, batch_size: 2, latency_runs: 3, evaluations: 5}
measurement: {min_seconds: 0}
"""


def test_kfnas_proxy_variance_trains_the_repeats_and_reports_their_spread(
    tmp_path, classification_data, capsys
):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    sets = [f"--set={o}" for o in [f"store_root={tmp_path / 'store'}"]]
    sets += [f"--set={o}" for o in data_overrides(classification_data)]
    out = tmp_path / "out"
    status = main(["proxy", "variance", str(spec), "--repeats", "2", "--out", str(out), *sets])
    printed = capsys.readouterr().out
    assert status == 0, printed + (out / "kfp.log").read_text()[-3000:]
    exp = open_experiment(f"{tmp_path / 'store'}/variance-e2e-variance")
    history = exp.records.history(VARIANCE)
    assert len(history) == 2 and all(r is not None and r.completed for _, r in history)
    finals = []
    for spec_, _ in history:
        curve = exp.records.read_curve(VARIANCE, spec_.trial_id)
        assert curve.steps == (1, 2, 3, 4, 5)
        finals.append(curve.values[-1])
    summary = json.loads(exp.store.read_text(f"{exp.layout.reports_dir()}/variance.json"))
    mean = statistics.fmean(finals)
    if mean:
        assert summary["coefficient_of_variation"] == pytest.approx(
            statistics.pstdev(finals) / mean
        )
    assert "coefficient of variation" in printed and "smoothness" in printed
    assert "variance.html" in printed
    pages = list((out / "kfp").rglob("html*"))
    assert pages and any("plotly" in p.read_text() for p in pages if p.is_file())
