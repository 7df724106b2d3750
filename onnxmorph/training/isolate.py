"""Run a native step in a forked child, so a crash becomes one error line, not a dead process.

onnxruntime's training graph builder and kernels (and ONNX shape inference) are C++ that can
die on a graph they do not expect: a SIGFPE from a zero-sized gradient buffer took the whole
CLI down without a message. Forking costs a few milliseconds plus the work done twice; the
child's result comes back through a pipe, its side effects through files it wrote.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from onnxmorph.errors import OnnxMorphError, TrainingError

T = TypeVar("T")

_DISABLE = "ONNXMORPH_NO_FORK"  # set to 1 to run in-process (debuggers, platforms without fork)


def run_isolated(work: Callable[[], T], what: str) -> T:
    """Run `work()` in a forked child and return its (picklable) result; raise TrainingError
    naming `what` if the child dies or fails.

    An OnnxMorphError raised by `work` is raised again here with its own type and message.
    """
    if not hasattr(os, "fork") or os.environ.get(_DISABLE) == "1":
        return work()
    # A forked child inherits onnxruntime's global state from a parent whose own sessions
    # (seed evaluation, post-conditions) may hold internal locks at fork time; such a child
    # can die without any fault of the model (seen once in a full test run). A model that
    # really crashes the runtime does so every time, so a death is retried before it counts.
    for _ in range(_ATTEMPTS - 1):
        try:
            return _run_forked(work, what)
        except _ChildKilled:
            continue
    try:
        return _run_forked(work, what)
    except _ChildKilled as killed:
        raise TrainingError(f"{what}: onnxruntime crashed ({killed.signal_name}) on this "
                            "model's training graph; rerun with --debug and report the "
                            "model") from None


_ATTEMPTS = 3


class _ChildKilled(Exception):
    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def _run_forked(work: Callable[[], T], what: str) -> T:
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's stack
        os.close(read_end)
        status = 0
        try:
            payload = pickle.dumps((True, work()))
        except BaseException as exc:  # noqa: BLE001 - everything must travel back
            status = 1
            payload = pickle.dumps((False, _portable(exc)))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ \
            else str(number)
        raise _ChildKilled(name)
    if not payload:
        raise TrainingError(f"{what}: the worker process exited with status "
                            f"{os.WEXITSTATUS(wait_status)} and no result")
    succeeded, value = pickle.loads(payload)
    if not succeeded:
        raise value
    return value


def _portable(exc: BaseException) -> BaseException:
    """An exception that survives pickling: OnnxMorphErrors as they are, others as text."""
    if isinstance(exc, OnnxMorphError):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001
            return TrainingError(str(exc))
    return TrainingError(f"{type(exc).__name__}: {exc}")
