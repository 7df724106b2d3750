"""Fuzzing onnxmorph with mutated sample models: the cases, and a crash-proof runner.

Case `i` of seed `s` is always the same mutated model: a sample model, one of six mutations
(byte flips, truncation, delete a node, change an attribute, swap inputs, change an
initializer's dims), then `onnxmorph analyze` and `onnxmorph prune --method l1` run on it
through click's CliRunner. The cases run in a worker process, so a native crash (a signal
inside a C++ library) or a hang costs that one case, not the run: the parent restarts the
worker after the case that died or hung.

    python -m tests.fuzz_cases 0 1 2        # the worker: runs cases 0, 1, 2, JSON lines out
"""

from __future__ import annotations

import json
import math
import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = [ROOT / "samples" / "mobilenet_seed.onnx", ROOT / "samples" / "resnet_seed.onnx"]
KINDS = ("byte_flips", "truncate", "delete_node", "change_attribute", "swap_inputs",
         "initializer_dims")


# ------------------------------------------------------------------ mutations
def _byte_flips(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 16))):
        # Half the flips hit the first 8 KB, where the nodes are (fields serialise in order):
        # flips in the weights mostly change numbers, not structure.
        limit = min(len(out), 8192) if rng.random() < 0.5 else len(out)
        out[int(rng.integers(limit))] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def _delete_node(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    del model.graph.node[int(rng.integers(len(model.graph.node)))]


_INTS = (0, -1, 1, 2, 3, 7, 1000)
_FLOATS = (0.0, -1.0, 1e30, float("nan"), 0.5)


def _change_attribute(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    nodes = [n for n in model.graph.node if n.attribute]
    attr = rng.choice(nodes).attribute
    attr = attr[int(rng.integers(len(attr)))]
    if attr.ints:
        attr.ints[int(rng.integers(len(attr.ints)))] = int(rng.choice(_INTS))
    elif attr.type == onnx.AttributeProto.INT:
        attr.i = int(rng.choice(_INTS))
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = float(rng.choice(_FLOATS))
    else:
        attr.name = attr.name + "_unknown"


def _swap_inputs(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    nodes = list(model.graph.node)
    multi = [n for n in nodes if len(n.input) >= 2]
    if multi and rng.random() < 0.5:
        node = multi[int(rng.integers(len(multi)))]
        i, j = rng.choice(len(node.input), size=2, replace=False)
        node.input[int(i)], node.input[int(j)] = node.input[int(j)], node.input[int(i)]
    else:  # the first inputs of two nodes trade places
        a, b = (nodes[int(k)] for k in rng.choice(len(nodes), size=2, replace=False))
        a.input[0], b.input[0] = b.input[0], a.input[0]


def _initializer_dims(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    inits = [i for i in model.graph.initializer if len(i.dims) >= 1]
    init = inits[int(rng.integers(len(inits)))]
    dims = list(init.dims)
    how = int(rng.integers(4))
    axis = int(rng.integers(len(dims)))
    if how == 0:
        dims[axis] += int(rng.choice([-1, 1]))
    elif how == 1:
        dims[axis] = 0
    elif how == 2 and len(dims) > 1:
        dims = dims[::-1]  # same element count, other layout
    else:
        dims = [math.prod(dims)]
    del init.dims[:]
    init.dims.extend(dims)


_PROTO_MUTATIONS = {"delete_node": _delete_node, "change_attribute": _change_attribute,
                    "swap_inputs": _swap_inputs, "initializer_dims": _initializer_dims}


def case_label(index: int) -> tuple[Path, str]:
    """(sample, mutation kind) of case `index`."""
    return SAMPLES[index % len(SAMPLES)], KINDS[(index // len(SAMPLES)) % len(KINDS)]


def mutated_model(index: int, seed: int) -> tuple[Path, str, bytes]:
    """(sample, mutation kind, mutated bytes) of case `index`."""
    rng = np.random.default_rng([seed, index])
    sample, kind = case_label(index)
    data = sample.read_bytes()
    if kind == "byte_flips":
        return sample, kind, _byte_flips(data, rng)
    if kind == "truncate":
        return sample, kind, _truncate(data, rng)
    model = onnx.load_from_string(data)
    _PROTO_MUTATIONS[kind](model, rng)
    return sample, kind, model.SerializeToString()


# ------------------------------------------------------------------ one case, in the worker
def run_case(index: int, seed: int, folder: Path) -> dict:
    from click.testing import CliRunner

    from onnxmorph.cli.main import cli

    sample, kind, data = mutated_model(index, seed)
    model, out = folder / f"case{index}.onnx", folder / f"case{index}.pruned.onnx"
    model.write_bytes(data)
    outcome: dict = {"case": index, "sample": sample.name, "mutation": kind}
    for command, args in (("analyze", ["analyze", str(model)]),
                          ("prune", ["prune", str(model), "--method", "l1", "-o", str(out)])):
        outcome[command] = _classify(CliRunner().invoke(cli, args))
    if outcome["prune"]["exit"] == 0:
        outcome["recheck"] = _recheck(model, out)
    return outcome


def _classify(result) -> dict:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = result.exception
        return {"exit": "traceback", "message": f"{type(exc).__name__}: {exc}"[:300]}
    lines = result.stderr.strip().splitlines()
    entry = {"exit": result.exit_code, "message": lines[0][:300] if lines else ""}
    if entry["message"].startswith("onnxmorph: internal error: "):
        entry["exit"] = "internal error"  # a traceback the CLI turned into one line
    if result.exit_code != 0 and len(lines) != 1:
        entry["exit"] = "not one line"
        entry["message"] = result.stderr[:300]
    return entry


def _recheck(seed: Path, pruned: Path) -> str:
    """The written model, checked again from its file, independently of the prune run."""
    from onnxmorph.rewrite.postconditions import check_loads, check_valid
    from onnxmorph.rewrite.verify import verify_models

    try:
        model = onnx.load(str(pruned))
        check_valid(model)
        check_loads(model)
        report = verify_models(seed, model)
        return "passed" if report.passed else f"verify failed: {report.summary()}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]


def _worker(indices: list[int], seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="onnxmorph-fuzz-") as folder:
        for index in indices:
            print(json.dumps({"started": index}), flush=True)
            print(json.dumps(run_case(index, seed, Path(folder))), flush=True)


# ------------------------------------------------------------------ the parent
def run_cases(indices: list[int], seed: int, case_timeout: float = 60.0) -> list[dict]:
    """Every case's outcome; a case that kills or hangs the worker is recorded as such."""
    results: list[dict] = []
    pending = list(indices)
    while pending:
        done, stopped = _run_worker(pending, seed, case_timeout)
        results += done
        finished = {r["case"] for r in done}
        if stopped is not None:
            sample, kind = case_label(stopped["case"])
            results.append({**stopped, "sample": sample.name, "mutation": kind})
            finished.add(stopped["case"])
        if not finished:
            raise RuntimeError("the fuzz worker ended without running a case")
        pending = [i for i in pending if i not in finished]
    return results


def _run_worker(indices: list[int], seed: int, case_timeout: float):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz_cases", "--seed", str(seed),
                             *map(str, indices)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    done, current, buffer = [], None, b""
    deadline = time.monotonic() + case_timeout
    try:
        while True:
            if not selector.select(timeout=max(deadline - time.monotonic(), 0.0)):
                proc.kill()
                proc.wait()
                return done, {"case": current, "outcome": "hang"}
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                code = proc.wait()
                if current is None:
                    return done, None
                return done, {"case": current, "outcome": f"crash (exit {code})"}
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "started" in message:
                    current, deadline = message["started"], time.monotonic() + case_timeout
                else:
                    done.append(message)
                    current = None
    finally:
        selector.close()
        proc.stdout.close()


def outcome_of(result: dict) -> str:
    """One word per case: ok, refused (exit 2 in one line), caught by post-conditions (exit 1,
    nothing written), or what went wrong."""
    if "outcome" in result:
        return result["outcome"]
    exits = [result[c]["exit"] for c in ("analyze", "prune")]
    if "traceback" in exits:
        return "traceback"
    if "internal error" in exits:
        return "internal error"
    if "not one line" in exits:
        return "not one line"
    if result.get("recheck", "passed") != "passed":
        return "bad output"
    if result["prune"]["message"].startswith("onnxmorph: error: post-condition"):
        return "caught by post-conditions"  # a bad model onnxmorph made, and did not write
    return "ok" if result["prune"]["exit"] == 0 else "refused"


if __name__ == "__main__":
    args = sys.argv[1:]
    seed = 0
    if args[:1] == ["--seed"]:
        seed, args = int(args[1]), args[2:]
    _worker([int(a) for a in args], seed)
