"""Fuzzing onnxmorph with mutated sample models: the cases, and a crash-proof runner.

Case `i` of seed `s` is always the same mutated model: a sample model, one of six mutations
(byte flips, truncation, delete a node, change an attribute, swap inputs, change an
initializer's dims), then `onnxmorph analyze` and `onnxmorph prune --method l1` run on it
through click's CliRunner. Two families of samples: "cnn" (the bundled ResNet and MobileNet)
and "transformer" (tests/attention_models.py encoders and real exports from
tests/fixtures/transformers, with the --input-shape their dynamic sequence needs).
The cases run in a worker process, so a native crash (a signal
inside a C++ library) or a hang costs that one case, not the run: the parent restarts the
worker after the case that died or hung.

    python -m tests.fuzz_cases [--seed S] [--family transformer] 0 1 2   # the worker
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
_EXPORTS = ROOT / "tests" / "fixtures" / "transformers"
_HF = ("input_ids", "attention_mask", "token_type_ids")


def _encoder(**kw) -> bytes:
    from tests.attention_models import encoder_model

    return encoder_model(**kw).SerializeToString()


# name → (the seed's bytes, extra arguments for analyze and prune)
TRANSFORMERS: dict[str, tuple] = {
    "encoder_separate": (lambda: _encoder(), []),
    "encoder_gather_shape_chain": (lambda: _encoder(qkv="gather", shape_chain=True), []),
    "encoder_split_cls": (lambda: _encoder(qkv="split", cls_token=True, opset=13), []),
    "vit_op17_dynamo": (lambda: (_EXPORTS / "vit_op17_dynamo.onnx").read_bytes(), []),
    "bert_op14_ts": (lambda: (_EXPORTS / "bert_op14_ts.onnx").read_bytes(),
                     ["--input-shape", "input=1x8"]),
    "sdpa_op17_ts": (lambda: (_EXPORTS / "sdpa_op17_ts.onnx").read_bytes(),
                     ["--input-shape", "input=1x8x6"]),
    "hfbert_op17_contrib": (lambda: (_EXPORTS / "hfbert_op17_contrib.onnx").read_bytes(),
                            [a for n in _HF for a in ("--input-shape", f"{n}=1x8")]),
}
FAMILIES = ("cnn", "transformer")


def _samples(family: str) -> list[str]:
    return [str(p) for p in SAMPLES] if family == "cnn" else list(TRANSFORMERS)


def _sample_bytes(sample: str) -> tuple[bytes, list[str]]:
    if sample in TRANSFORMERS:
        make, extra = TRANSFORMERS[sample]
        return make(), list(extra)
    return Path(sample).read_bytes(), []
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
    else:  # the first inputs of two nodes trade places (Constant nodes have none)
        nodes = [n for n in nodes if n.input]
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


def case_label(index: int, family: str = "cnn") -> tuple[str, str]:
    """(sample, mutation kind) of case `index`."""
    samples = _samples(family)
    if family == "cnn":  # kept as it was, so old case numbers still name the same case
        return samples[index % len(samples)], KINDS[(index // len(samples)) % len(KINDS)]
    # 7 samples and 6 kinds are coprime: any 7 cases in a row see every sample and kind
    return samples[index % len(samples)], KINDS[index % len(KINDS)]


def mutated_model(index: int, seed: int, family: str = "cnn") -> tuple[str, str, bytes, list]:
    """(sample, mutation kind, mutated bytes, extra CLI arguments) of case `index`."""
    # The CNN family keeps the random stream it always had, so old case numbers still hold.
    rng = np.random.default_rng([seed, index] if family == "cnn" else [seed, index, 1])
    sample, kind = case_label(index, family)
    data, extra = _sample_bytes(sample)
    if kind == "byte_flips":
        return sample, kind, _byte_flips(data, rng), extra
    if kind == "truncate":
        return sample, kind, _truncate(data, rng), extra
    model = onnx.load_from_string(data)
    _PROTO_MUTATIONS[kind](model, rng)
    return sample, kind, model.SerializeToString(), extra


# ------------------------------------------------------------------ one case, in the worker
def run_case(index: int, seed: int, folder: Path, family: str = "cnn") -> dict:
    from click.testing import CliRunner

    from onnxmorph.cli.main import cli

    sample, kind, data, extra = mutated_model(index, seed, family)
    model, out = folder / f"case{index}.onnx", folder / f"case{index}.pruned.onnx"
    model.write_bytes(data)
    outcome: dict = {"case": index, "sample": Path(sample).name, "mutation": kind}
    for command, args in (("analyze", ["analyze", str(model), *extra]),
                          ("prune", ["prune", str(model), "--method", "l1", "-o", str(out),
                                     "--no-measure-latency", *extra])):
        outcome[command] = _classify(CliRunner().invoke(cli, args))
    if outcome["prune"]["exit"] == 0:
        outcome["recheck"] = _recheck(model, out, _shapes(extra))
    return outcome


def _shapes(extra: list[str]) -> dict[str, tuple[int, ...]] | None:
    from onnxmorph.graph import parse_input_shapes

    given = tuple(extra[i + 1] for i, a in enumerate(extra) if a == "--input-shape")
    return parse_input_shapes(given) if given else None


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


def _recheck(seed: Path, pruned: Path, shapes: dict | None = None) -> str:
    """The written model, checked again from its file, independently of the prune run."""
    from onnxmorph.rewrite.postconditions import check_loads, check_valid
    from onnxmorph.rewrite.verify import verify_models

    try:
        model = onnx.load(str(pruned))
        check_valid(model)
        check_loads(model)
        report = verify_models(seed, model, shapes)
        return "passed" if report.passed else f"verify failed: {report.summary()}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]


def _worker(indices: list[int], seed: int, family: str) -> None:
    with tempfile.TemporaryDirectory(prefix="onnxmorph-fuzz-") as folder:
        for index in indices:
            print(json.dumps({"started": index}), flush=True)
            print(json.dumps(run_case(index, seed, Path(folder), family)), flush=True)


# ------------------------------------------------------------------ the parent
def run_cases(indices: list[int], seed: int, case_timeout: float = 60.0,
              family: str = "cnn") -> list[dict]:
    """Every case's outcome; a case that kills or hangs the worker is recorded as such."""
    results: list[dict] = []
    pending = list(indices)
    while pending:
        done, stopped = _run_worker(pending, seed, case_timeout, family)
        results += done
        finished = {r["case"] for r in done}
        if stopped is not None:
            sample, kind = case_label(stopped["case"], family)
            results.append({**stopped, "sample": Path(sample).name, "mutation": kind})
            finished.add(stopped["case"])
        if not finished:
            raise RuntimeError("the fuzz worker ended without running a case")
        pending = [i for i in pending if i not in finished]
    return results


def _run_worker(indices: list[int], seed: int, case_timeout: float, family: str):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz_cases", "--seed", str(seed),
                             "--family", family, *map(str, indices)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
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
    seed, family = 0, "cnn"
    while args[:1] in (["--seed"], ["--family"]):
        if args[0] == "--seed":
            seed = int(args[1])
        else:
            family = args[1]
        args = args[2:]
    _worker([int(a) for a in args], seed, family)
