"""A warm-forked child for ``test_local_launcher``: writes which CPU kernels TensorFlow runs."""

from __future__ import annotations

import json
import os
from pathlib import Path


def main(argv: list[str]) -> int:
    """Writes ``{"env": TF_ENABLE_ONEDNN_OPTS, "onednn": whether oneDNN is on}`` to ``argv[0]``."""
    from tensorflow.python.util import _pywrap_util_port

    state = {
        "env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "onednn": bool(_pywrap_util_port.IsMklEnabled()),
    }
    Path(argv[0]).write_text(json.dumps(state))
    return 0
