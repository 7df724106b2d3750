"""Time models in onnxruntime CPU: sessions made once, runs interleaved, medians reported."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import onnx


def session_options(threads: int | None = None):
    """CPUExecutionProvider options: all graph optimisations, `threads` intra-op threads
    (None: onnxruntime's default, one per physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    # Idle worker threads of one session must not spin while another runs: interleaved
    # timing keeps several sessions open (spinning made the first model of each round slow).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def make_session(model: onnx.ModelProto | bytes, threads: int | None = None):
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, session_options(threads),
                                providers=["CPUExecutionProvider"])


def random_feeds(session, batch: int | None, shapes: dict[str, tuple[int, ...]] | None = None,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs: the batch dimension set to `batch` (None: as declared), other dims
    from `shapes` or the model (dynamic ones: 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        known = (shapes or {}).get(arg.name)
        dims = list(known) if known else [d if isinstance(d, int) else 1 for d in arg.shape]
        if batch is not None:
            dims[0] = batch
        kind = {"tensor(int64)": np.int64, "tensor(int32)": np.int32,
                "tensor(bool)": np.bool_}.get(arg.type, np.float32)
        feeds[arg.name] = (rng.standard_normal(dims) if kind is np.float32
                           else rng.integers(0, 2, dims)).astype(kind)
    return feeds


@dataclass(frozen=True)
class Timing:
    median_ms: float
    q1_ms: float
    q3_ms: float
    runs: int

    def to_dict(self) -> dict:
        return {"median_ms": self.median_ms, "q1_ms": self.q1_ms, "q3_ms": self.q3_ms,
                "runs": self.runs}


def time_interleaved(models: list[onnx.ModelProto | bytes], batch: int = 1,
                     threads: int | None = None, runs: int = 10, warmup: int = 2,
                     shapes: dict[str, tuple[int, ...]] | None = None) -> list[Timing]:
    """Latency of each model, run in turn (A B A B …) so machine load hits all alike."""
    samples = interleaved_ms(models, batch, threads, runs, warmup, shapes)
    return [_summary(samples[:, i].tolist()) for i in range(samples.shape[1])]


def interleaved_ms(models: list[onnx.ModelProto | bytes], batch: int = 1,
                   threads: int | None = None, runs: int = 10, warmup: int = 2,
                   shapes: dict[str, tuple[int, ...]] | None = None) -> np.ndarray:
    """[runs, models] milliseconds of each model's runs in turn (A B A B …), after `warmup`
    rounds: per-round ratios between models stay comparable under machine load."""
    sessions = [make_session(m, threads) for m in models]
    feeds = [random_feeds(s, batch, shapes) for s in sessions]
    samples = np.zeros((runs, len(sessions)))
    for round_index in range(warmup + runs):
        for i, (session, feed) in enumerate(zip(sessions, feeds)):
            start = time.perf_counter()
            session.run(None, feed)
            if round_index >= warmup:
                samples[round_index - warmup, i] = (time.perf_counter() - start) * 1e3
    return samples


def time_fastest(runs: list[tuple[object, dict]], min_rounds: int = 5,
                 min_seconds: float = 0.02, max_rounds: int = 50) -> list[float]:
    """Fastest run of each (session, feeds), in ms, measured in interleaved rounds (every
    session once per round, after one warm-up run each). Other processes only ever add
    time, and a descheduled stretch then hits one run of one point, not all runs of it: on a
    busy machine a median of consecutive runs put 25 ms into a table for a 1.7 ms layer.
    Rounds go on until `min_rounds` and `min_seconds` per session are both reached."""
    for session, feeds in runs:
        session.run(None, feeds)
    best = [math.inf] * len(runs)
    began, rounds = time.perf_counter(), 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - began
                                   < min_seconds * len(runs)):
        for index, (session, feeds) in enumerate(runs):
            start = time.perf_counter()
            session.run(None, feeds)
            best[index] = min(best[index], (time.perf_counter() - start) * 1e3)
        rounds += 1
    return best


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def busy_warning(loads: list[float | None]) -> str | None:
    """A warning when the machine was busier than its cores while timing."""
    cores = os.cpu_count() or 1
    worst = max((v for v in loads if v is not None), default=None)
    if worst is None or worst <= cores:
        return None
    return (f"the machine was busy while timing (1-min load average up to {worst:g} on "
            f"{cores} cores): latencies are the fastest of interleaved runs, but measure "
            "again on an idle machine to trust them (profile --force)")


def _summary(samples: list[float]) -> Timing:
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return Timing(float(median), float(q1), float(q3), len(samples))
