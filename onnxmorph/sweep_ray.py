"""Ray as the sweep's scheduler: a local instance by default, a running cluster by address.

Ray is optional (`pip install 'onnxmorph[sweep]'`) and imported only here, only when a
sweep runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from onnxmorph.errors import SweepError

# Results are small dicts; Ray's minimum object store (75 MiB) is plenty.
_OBJECT_STORE_BYTES = 80 * 1024 * 1024


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise SweepError("onnxmorph sweep schedules its runs on Ray, which is not installed: "
                         "pip install 'onnxmorph[sweep]'") from exc
    return ray


def local_cores() -> int:
    """Cores this process may use (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_on_ray(specs: list, function: Callable, *, address: str | None, threads: int,
               gpus: int, on_done: Callable[[dict], None] | None = None) -> list[dict]:
    """`function(spec)` for every spec as a Ray task with `threads` CPUs (and `gpus` GPUs);
    records come back in the order runs finish. A task whose worker dies (native crash, out
    of memory) becomes a failed run's record; the other runs go on."""
    from onnxmorph.sweep import record_crash

    records = []
    with ray_session(address, threads, gpus) as ray:
        # A fresh worker per run (max_calls=1): a run cannot inherit another's memory or
        # state, and no run is retried behind the user's back (max_retries=0).
        task = ray.remote(num_cpus=threads, num_gpus=gpus, max_calls=1,
                          max_retries=0)(function)
        pending = {task.remote(spec): spec for spec in specs}
        while pending:
            # A timeout, so that Ctrl-C reaches this loop while long runs go on.
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            if not ready:
                continue
            spec = pending.pop(ready[0])
            try:
                record = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001  the worker, not the run, failed
                record = record_crash(spec, exc)
            records.append(record)
            if on_done:
                on_done(record)
    return records


@contextlib.contextmanager
def ray_session(address: str | None, threads: int, gpus: int) -> Iterator:
    """A connected Ray; started here (and shut down on exit, processes and all) unless the
    caller already initialised one."""
    ray = import_ray()
    started = not ray.is_initialized()
    # ray.init installs its own SIGTERM handler (sys.exit) and shutdown leaves it there: the
    # CLI's (Interrupted → cleanup, exit 143) and, in tests, the process's own must come back.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if started:
        _start(ray, address, threads)
    try:
        _check_resources(ray, threads, gpus)
        yield ray
    finally:
        if started:
            ray.shutdown()
            for sig, handler in handlers.items():
                if handler is not None and threading.current_thread() is threading.main_thread():
                    signal.signal(sig, handler)


def _start(ray, address: str | None, threads: int) -> None:
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:  # noqa: BLE001  connection errors come in many types
            ray.shutdown()
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise SweepError(f"could not join the Ray cluster at {address}: {lines[0]}") from exc
        return
    cores = local_cores()
    if threads > cores:
        raise SweepError(f"--threads-per-run {threads} is more than this machine's {cores} "
                         "cores")
    # Workers import the same onnxmorph as this process, installed or not.
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    # Ray runs its workers at nice 15 to keep its own processes responsive; here the workers
    # are the whole job, and should compete for the CPU like a `prune` run by hand.
    ray.init(num_cpus=cores, include_dashboard=False, object_store_memory=_OBJECT_STORE_BYTES,
             runtime_env={"env_vars": {"PYTHONPATH": path}},
             _system_config={"worker_niceness": 0}, **quiet)


def _check_resources(ray, threads: int, gpus: int) -> None:
    """Ray waits forever for a task no node can hold: say so instead."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= threads and n.get("GPU", 0) >= gpus for n in nodes):
        need = f"{threads} CPUs" + (f" and {gpus} GPU" if gpus else "")
        raise SweepError(f"no Ray node has {need} for one run; lower --threads-per-run"
                         + (" or add a node with a GPU" if gpus else ""))
