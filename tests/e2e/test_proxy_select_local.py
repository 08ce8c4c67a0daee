"""``kfnas proxy select`` under ``kfp.local``: reference models pruned by the crowding rule.

The smallest real run: 3 MnasNet architectures at 32 px, batch 2, trained to a third of a 10-step
full budget, the crowding rule removes one, the 2 left continue from their checkpoints to the full
10 steps; every trial is measured by the local measurement worker. Checks the continuations, the
report in the store and the KFP outputs, and the table printed.
"""

import json
import os

import pytest
from shared_fixtures import data_overrides

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.cli import main
from kfnas.stages.selection import SELECTION
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow, pytest.mark.tf]

SPEC = """
name: select-e2e
task:
  kind: classification
  num_classes: 3
  image_size: 32
  options: {endpoints_num_filters: 16}
studies:
  proxy: {space: mnasnet}
budget: {train_steps: 1, batch_size: 2, latency_runs: 3}
"""


def test_kfnas_proxy_select_keeps_the_spread_out_models_trained_fully(
    tmp_path, classification_data, capsys
):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    sets = [f"--set=store_root={tmp_path / 'store'}"]
    sets += [f"--set={o}" for o in data_overrides(classification_data)]
    out = tmp_path / "out"
    argv = ["proxy", "select", str(spec), "--models", "3", "--final", "2", "--remove", "1"]
    status = main([*argv, "--out", str(out), *sets])
    printed = capsys.readouterr().out
    assert status == 0, printed + (out / "kfp.log").read_text()[-3000:]
    exp = open_experiment(f"{tmp_path / 'store'}/select-e2e-selection")
    history = exp.records.history(SELECTION)
    assert all(r is not None and r.completed for _, r in history)
    first = [s for s, _ in history if s.rung == 0]
    last = [s for s, _ in history if s.rung == 1]
    assert len(first) == 3 and len(last) == 2
    assert {s.budget["train_steps"] for s in first} == {4}  # a third of 10, rounded up
    for spec_ in last:
        assert spec_.budget["train_steps"] == 10 and spec_.promoted_from in {
            s.trial_id for s in first
        }
        result = exp.records.read_result(SELECTION, spec_.trial_id)
        assert result.start_steps == (4,) and "latency_ms" in result.metrics
    report = json.loads(exp.store.read_text(f"{exp.layout.reports_dir()}/model_selection.json"))
    assert sorted(s["trial_id"] for s in report["selected"]) == sorted(s.trial_id for s in last)
    assert len(report["iterations"][0]["removed"]) == 1
    assert "Selected reference models" in printed and "model_selection.html" in printed
    assert any("Selected models" in p.read_text() for p in (out / "kfp").rglob("html*"))
