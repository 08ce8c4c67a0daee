"""Warm starts: local trial processes forked from one that has imported TensorFlow already.

Importing TensorFlow, tf-models-official and kfnas's trainer takes about 10 s of CPU per process,
a large part of a short proxy trial's fixed cost on a laptop. The local launcher therefore starts
each trial (``python -m kfnas.stages.worker ...``) as a child of a ``multiprocessing`` fork server
that imported those modules once (``PRELOAD``, before TensorFlow creates its runtime: importing it
starts no TensorFlow thread, and the libraries' own threads survive ``fork`` through their
``pthread_atfork`` handlers). Each child is a process of its own as before: its own session
(``setsid``, so the launcher signals its process group), its own log file on stdout and stderr,
the launcher's environment (read by TensorFlow when the child first runs an op, so the thread
settings apply), exit status and signals as a subprocess's (a SIGKILL reads as ``-9``).

CPU kernels: trials train with TensorFlow's own (Eigen) CPU kernels, not oneDNN's
(``TRAINING_ENV``: ``TF_ENABLE_ONEDNN_OPTS=0``, which TensorFlow reads once, at import, so the
fork server starts with it). On the demo's proxy model (SpineNet-MBConv at 64 px, batch 8, 2
cores) a training step took 33-43 ms with them and 75-98 ms with oneDNN (its layout reorders and
primitive set-up cost more than they save on small tensors; ``benchmarks/cpu_kernels.py`` runs
both side by side). The same computation up to rounding: the first step's loss agreed to 1e-4,
and two oneDNN runs' loss curves differ from each other as much as from an Eigen run's (threaded
reductions are not bit-reproducible either way). An environment that sets the variable
itself keeps its value (the fork server's first start takes it from the trial's environment).
The measurement worker is not forked from here: it times models with TensorFlow's defaults, as
a deployed model runs.

To preload more: add the module to ``PRELOAD`` (it must not run TensorFlow ops at import).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

#: What the fork server imports once: the trial worker and everything a trial trains with,
#: official.vision's tasks included (kfnas's task kinds import them when a trial builds its task:
#: ~0.6 s of each trial otherwise; they import OpenCV, whose bundled OpenBLAS starts a thread
#: pool that, like NumPy's, shuts down for a fork through its ``pthread_atfork`` handler).
PRELOAD = (
    "kfnas.stages.worker",
    "kfnas.training.runner",
    "kfnas.training.trainer",
    "kfnas.training.distribution",
    "kfnas.training.checkpoints",
    "kfnas.tasks",
    "official.vision.tasks.retinanet",
    "official.vision.tasks.image_classification",
    "official.vision.tasks.semantic_segmentation",
)


#: Environment a local training process imports TensorFlow under, where the caller's environment
#: does not set the variable (module doc: CPU kernels).
TRAINING_ENV = {"TF_ENABLE_ONEDNN_OPTS": "0"}


def training_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``TRAINING_ENV``'s variables added where it does not set them."""
    return {**TRAINING_ENV, **env}


#: Seconds a fork may take to start its session (the fork server's first start imports
#: ``PRELOAD``: about 10 s on a busy 2-core machine).
START_TIMEOUT_S = 300.0


class WarmProcess:
    """A forked trial process with the parts of ``subprocess.Popen`` the launcher uses."""

    def __init__(self, process: Any):
        self._process = process

    @property
    def pid(self) -> int:
        """Its process id (and process group id)."""
        return int(self._process.pid)

    def poll(self) -> int | None:
        """Its exit status (negative: the signal that ended it), or None while it runs."""
        return self._process.exitcode  # type: ignore[no-any-return]

    def wait(self) -> int:
        """Waits for it to end; its exit status."""
        self._process.join()
        return int(self._process.exitcode)


def prestart() -> None:
    """Starts the fork server now (it imports ``PRELOAD``), not at the first trial."""
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
    with _server_environment(os.environ):
        forkserver.ensure_running()


@contextlib.contextmanager
def _server_environment(env: Mapping[str, str]) -> Iterator[None]:
    """``TRAINING_ENV``'s variables as ``env`` (else the defaults) while the server may start.

    This process's environment has them only inside the block, as it was afterwards.

    The server imports TensorFlow when it starts, once per process: the first start's values
    hold for every trial forked from it.
    """
    wanted = training_environment({n: env[n] for n in TRAINING_ENV if n in env})
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_warm(module: str, args: Sequence[str], log: Path, env: Mapping[str, str]) -> WarmProcess:
    """Runs ``python -m module *args`` as a child of the fork server, output appended to ``log``.

    Args:
        module: The module whose ``main(argv)`` the child runs (``kfnas.stages.worker``).
        args: Its command-line arguments.
        log: The file its stdout and stderr go to.
        env: Its whole environment.

    Raises:
        OSError: The child did not start its session within ``START_TIMEOUT_S``.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # takes effect when the server starts
    started, child_end = context.Pipe(duplex=False)
    process = context.Process(
        target=_run,
        args=(module, list(args), str(log), dict(env), child_end),
        name=f"kfnas {module}",
    )
    with _server_environment(env):  # the server's first start imports TensorFlow under it
        process.start()
    child_end.close()
    # Once it has its own session, the launcher can signal its process group (pause, stop).
    if not started.poll(START_TIMEOUT_S):
        process.kill()
        raise OSError(f"the forked process did not start within {START_TIMEOUT_S:g} s")
    started.close()
    return WarmProcess(process)


def _run(module: str, args: list[str], log: str, env: dict[str, str], started: Any) -> None:
    """The child: its own session, its log on stdout and stderr, its environment, then main."""
    os.setsid()
    started.send(True)
    started.close()
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [module, *args]
    main = importlib.import_module(module).main
    sys.exit(main(args))
