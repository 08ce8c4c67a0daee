"""The dependency rules of docs/architecture.md, checked two ways.

Statically, import-linter checks the contracts in pyproject.toml: the layers (a package imports
only the packages below it), the core never importing kfp, and the proposal side never importing
TensorFlow. At run time, a fresh interpreter imports the modules and looks at ``sys.modules``,
which also catches a heavy import pulled in through a third-party package, and covers
``components/`` and ``pipelines/``, which import-linter cannot walk.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
TF_MODULES = ["tensorflow", "keras", "tf_keras", "official"]

_PROBE = """
import importlib, json, pkgutil, sys
prefixes, excluded = {prefixes!r}, {excluded!r}

def walk(name):
    module = importlib.import_module(name)
    yield name
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        child = name + "." + info.name
        if child not in excluded:
            yield from walk(child)

names = [n for p in prefixes for n in walk(p)]
print(json.dumps({{"imported": names, "modules": sorted(sys.modules)}}))
"""


def imported_modules(prefixes, excluded=()):
    """Imports every module under ``prefixes`` (but ``excluded``) in a fresh interpreter."""
    code = _PROBE.format(prefixes=list(prefixes), excluded=list(excluded))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def roots(modules):
    return {m.split(".")[0] for m in modules}


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_proposal_side_never_imports_tensorflow():
    light = ["kfnas.config", "kfnas.records", "kfnas.store", "kfnas.search"]
    probe = imported_modules(light)
    assert any(name.startswith("kfnas.search.") for name in probe["imported"])
    assert any(name.startswith("kfnas.store.") for name in probe["imported"])
    assert not roots(probe["modules"]) & set(TF_MODULES)


def test_the_steps_and_workers_start_without_scipy_and_matplotlib():
    """What every pipeline step, trial and measurement process imports stays light.

    ``scipy.stats`` (~1 s) is imported on the first rank correlation, matplotlib when a plot is
    drawn: neither when a trial or a measurement starts.
    """
    code = (
        "import sys, kfnas.stages, kfnas.stages.worker, kfnas.stages.measure_worker; "
        "print(sorted(m for m in ('scipy.stats', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "[]", out.stdout + out.stderr


def test_tensorflow_imported_after_kfnas_loads_tf_keras_only() -> None:
    """Importing kfnas sets ``TF_USE_LEGACY_KERAS`` unless the user did: no Keras 3 loaded."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    code = (
        "import sys, kfnas, tensorflow as tf, tf_keras; "
        "print(tf.keras.Model is tf_keras.Model, 'keras.src' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["True", "False"], result.stdout + result.stderr
    code = "import os, kfnas; print(os.environ['TF_USE_LEGACY_KERAS'])"
    env["TF_USE_LEGACY_KERAS"] = "0"  # the user's choice stays
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.strip() == "0", result.stdout + result.stderr


def test_library_never_imports_kfp():
    probe = imported_modules(
        ["kfnas"], excluded=["kfnas.components", "kfnas.pipelines", "kfnas.cli"]
    )
    assert len(probe["imported"]) > 5
    assert "kfp" not in roots(probe["modules"])


def test_components_import_only_the_stages_of_kfnas():
    """A component's module imports kfp and its image; its body calls ``kfnas.stages``.

    The one other import is ``read_handoff``, with which ``export_model`` fills its Model
    artifact's metadata from the manifest the stage wrote.
    """
    import ast

    for path in sorted((ROOT / "components").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kfnas"):
                names = {alias.name for alias in node.names}
                allowed = node.module.startswith("kfnas.components") or node.module in (
                    "kfnas.export.handoff",
                    "kfnas.version",
                )
                allowed |= node.module == "kfnas" and names == {"stages"}
                assert allowed, (
                    f"{path.name} imports {node.module}: components call kfnas.stages only"
                )
