"""A budget sweep: one `onnxmorph.prune` run (structure learning + fine-tuning) per budget and
seed, scheduled as Ray tasks, then the accuracy–cost Pareto front of the results.

Each run lives in `OUTDIR/run-b<budget>-s<seed>/` (model.onnx, its structure and report
JSON, train.jsonl, run.json). A run is built in a hidden `.partial` folder and renamed when
it ends, so a run folder is always a whole run: a finished one is reused when the sweep is
re-run, a failed one (run.json says why) is tried again.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnxmorph.errors import OnnxMorphError, SweepError
from onnxmorph.io import save_json
from onnxmorph.pareto import pareto_front

MODEL_FILE = "model.onnx"
RUN_RECORD = "run.json"
# Options that change how fast a run goes, not what it computes: a finished run made with
# other values of these is still the same run.
_NOT_SETTINGS = ("device", "threads", "workdir", "log", "progress")
_COST_OF_TARGET = {"flops": "macs"}  # the report's name of each target's cost


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs; plain data, so it travels to a Ray worker as is."""

    model: str
    data: str
    budget: float
    seed: int
    folder: str  # the run's final folder
    prune: dict = field(default_factory=dict)  # method, target, round_to … of onnxmorph.prune
    training: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # what makes two runs the same run


def run_name(budget: float, seed: int) -> str:
    return f"run-b{budget:g}-s{seed}"


def run_one(spec: RunSpec) -> dict:
    """Prune once and write the run's folder; never raises for a failing run.

    Returns the run record: name, budget, seed, status ("done" or "failed"), reason, seconds,
    settings and, when done, the report.
    """
    import onnxmorph

    final = Path(spec.folder)
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    record = {"name": final.name, "budget": spec.budget, "seed": spec.seed,
              "settings": spec.settings}
    record["started"] = time.time()
    start = time.perf_counter()
    try:
        if spec.training.get("workdir"):
            Path(spec.training["workdir"]).mkdir(parents=True, exist_ok=True)
        training = {**spec.training, "seed": spec.seed, "progress": False,
                    "log": str(partial / "train.jsonl")}
        result = onnxmorph.prune(spec.model, budget=spec.budget, data=spec.data,
                                 training=training, **spec.prune)
        result.save(partial / MODEL_FILE)
        record.update(status="done", reason=None, report=result.report())
    except Exception as exc:  # a failed run is recorded; the sweep goes on
        record.update(status="failed", reason=failure_reason(exc))
    record["seconds"] = round(time.perf_counter() - start, 2)
    save_json(_json_safe(record), partial / RUN_RECORD)
    shutil.rmtree(final, ignore_errors=True)  # a failed earlier attempt
    os.replace(partial, final)
    return record


def record_crash(spec: RunSpec, exc: BaseException) -> dict:
    """The record of a run whose process died before `run_one` could write one."""
    final = Path(spec.folder)
    record = {"name": final.name, "budget": spec.budget, "seed": spec.seed,
              "settings": spec.settings, "status": "failed",
              "reason": f"the run's Ray task failed: {failure_reason(exc)}", "seconds": None}
    shutil.rmtree(final.with_name(f".{final.name}.partial"), ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    save_json(_json_safe(record), final / RUN_RECORD)
    return record


def failure_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(exc, OnnxMorphError):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def finished_run(spec: RunSpec) -> dict | None:
    """The record of a complete, successful run in the spec's folder, else None.

    Raises SweepError when that run was made with other settings: reusing it would mix two
    experiments in one front, redoing it would destroy the user's results.
    """
    folder = Path(spec.folder)
    try:
        record = json.loads((folder / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None
    report = record.get("report") or {}
    pruned = report.get("pruned") or {}
    if (record.get("status") != "done" or not (folder / MODEL_FILE).is_file()
            or not {"macs", "params"} <= set(pruned)):
        return None
    stored, wanted = _flat(record.get("settings") or {}), _flat(_json_safe(spec.settings))
    # An option the stored run does not name is one a later onnxmorph added (at its default).
    changed = sorted(k for k in stored if stored[k] != wanted.get(k))
    if changed:
        raise SweepError(f"'{folder}' holds a run made with other settings ({', '.join(changed)}"
                         "); use another output folder or delete that run folder")
    return {**record, "status": "resumed"}


@dataclass
class SweepResult:
    """Every run (budget, seed, status, accuracy, costs, on_front) and where the files are."""

    outdir: Path
    target: str
    cost: str  # the report's cost the front is drawn on (macs, params …)
    quality: str  # "accuracy", or "agreement_with_seed" for loaders without labels
    runs: list[dict]
    plot: Path | str | None = None  # the PNG, or why it was not drawn

    @property
    def front(self) -> list[dict]:
        return sorted((r for r in self.runs if r["on_front"]), key=lambda r: r["cost"])

    def to_dict(self) -> dict:
        return {"target": self.target, "cost": self.cost, "quality": self.quality,
                "front": [r["name"] for r in self.front], "runs": self.runs}


def sweep(
    model: str | os.PathLike,
    *,
    data: str | os.PathLike,
    budgets: Sequence[float],
    outdir: str | os.PathLike,
    seeds: Sequence[int] = (0,),
    method: str = "auto",
    target: str = "flops",
    training: dict | None = None,
    address: str | None = None,
    threads_per_run: int = 1,
    on_run_done: Callable[[dict], None] | None = None,
    **prune_options,
) -> SweepResult:
    """Run `onnxmorph.prune` for every (budget, seed) on Ray and find the Pareto front.

    `address` ("HOST:PORT") joins a running Ray cluster, else a local Ray instance uses the
    machine's cores, `threads_per_run` ORT threads per run. `prune_options` go to
    `onnxmorph.prune` (round_to, min_channels, exclude, input_shapes). Writes
    `outdir/pareto.json` and `outdir/pareto.png`.
    """
    from onnxmorph.sweep_ray import import_ray, run_on_ray

    specs = plan_runs(model, data=data, budgets=budgets, seeds=seeds, outdir=outdir,
                      method=method, target=target, training=training,
                      threads_per_run=threads_per_run, check_device=address is None,
                      **prune_options)
    import_ray()  # one clear line before any output when Ray is missing
    records, todo = [], []
    for spec in specs:
        done = finished_run(spec)
        if done is None:
            todo.append(spec)
        else:
            records.append(done)
            if on_run_done:
                on_run_done(done)
    Path(outdir).mkdir(parents=True, exist_ok=True)
    if todo:
        gpus = 1 if str((training or {}).get("device", "cpu")).startswith("cuda") else 0
        records += run_on_ray(todo, run_one, address=address, threads=threads_per_run,
                              gpus=gpus, on_done=on_run_done)
    order = {Path(spec.folder).name: i for i, spec in enumerate(specs)}
    records.sort(key=lambda r: order[r["name"]])
    return summarize(records, Path(outdir), target)


def plan_runs(model, *, data, budgets, seeds, outdir, method, target, training,
              threads_per_run, check_device: bool = True, **prune_options) -> list[RunSpec]:
    """Check every argument once, before anything runs, and describe each run."""
    from onnxmorph.graph.cost import TARGETS
    from onnxmorph.graph.model_file import read_model_file
    from onnxmorph.methods.registry import method_names
    from onnxmorph.methods.select import check_budget
    from onnxmorph.training.trainer import TrainOptions

    if not budgets or not seeds:
        raise SweepError("give at least one budget and one seed, e.g. --budgets 0.3,0.5,0.75")
    for budget in budgets:
        check_budget(budget)
    methods = ("auto", *method_names())
    if method not in methods:
        raise SweepError(f"unknown method '{method}'; use one of {', '.join(methods)}")
    if target not in TARGETS:
        raise SweepError(f"unknown target '{target}'; use one of {', '.join(TARGETS)}")
    if threads_per_run < 1:
        raise SweepError("--threads-per-run must be at least 1")
    training = dict(training or {})
    # On a cluster the workers, not this machine, need the GPU.
    TrainOptions(**(training if check_device else {**training, "device": "cpu"}))
    read_model_file(model)
    if not Path(data).is_file():
        raise SweepError(f"data loader '{data}' does not exist; pass a Python file with "
                         "train_batches()")
    names = [run_name(b, s) for b in budgets for s in seeds]
    if len(set(names)) != len(names):
        raise SweepError("budgets and seeds repeat a run; give each (budget, seed) once")
    if Path(outdir).is_file():
        raise SweepError(f"output '{outdir}' is a file; give a folder for the sweep's runs")
    model_path, data_path = str(Path(model).resolve()), str(Path(data).resolve())
    prune = {"method": method, "target": target, **prune_options}
    common = {"model": model_path, "model_sha256": _sha256(model_path), "data": data_path,
              "prune": _with_defaults(prune), "training": {
                  k: v for k, v in asdict(TrainOptions(**{**training, "device": "cpu"})).items()
                  if k not in (*_NOT_SETTINGS, "seed")}}
    root = Path(outdir).resolve()
    return [RunSpec(model=model_path, data=data_path, budget=float(b), seed=int(s),
                    folder=str(root / run_name(b, s)), prune=prune,
                    training=_per_run(training, threads_per_run, run_name(b, s)),
                    settings={**common, "budget": float(b), "seed": int(s)})
            for b in budgets for s in seeds]


def _with_defaults(prune_options: dict) -> dict:
    """The options of `onnxmorph.prune` a run used, defaults included: an option given
    explicitly at its default value is the same run."""
    from onnxmorph.api import prune

    skip = ("model", "budget", "data", "training")
    defaults = {name: p.default for name, p in inspect.signature(prune).parameters.items()
                if name not in skip and p.default is not inspect.Parameter.empty}
    unknown = sorted(set(prune_options) - set(defaults))
    if unknown:
        raise SweepError(f"onnxmorph.prune has no option {', '.join(unknown)}")
    return {**defaults, **prune_options}


def _per_run(training: dict, threads: int, name: str) -> dict:
    """Each run its threads and, when artifacts are kept, its own work folder."""
    workdir = training.get("workdir")
    return {**training, "threads": threads,
            "workdir": str(Path(workdir).resolve() / name) if workdir else None}


def summarize(records: list[dict], outdir: Path, target: str) -> SweepResult:
    """Rows with accuracy, costs and the front; writes pareto.json and pareto.png."""
    from onnxmorph.sweep_plot import write_pareto_plot

    cost = _COST_OF_TARGET.get(target, target)
    rows = [_row(record, cost) for record in records]
    finished = [r for r in rows if r["status"] != "failed"]
    labelled = all(r["accuracy"] is not None for r in finished)
    quality = "accuracy" if labelled else "agreement_with_seed"
    for row in rows:
        row["quality"] = row[quality]
    for row, on_front in zip(rows, pareto_front([(r["quality"], r["cost"]) for r in rows])):
        row["on_front"] = on_front
    result = SweepResult(outdir=outdir, target=target, cost=cost, quality=quality, runs=rows)
    save_json(result.to_dict(), outdir / "pareto.json")
    result.plot = write_pareto_plot(result, outdir / "pareto.png")
    return result


def _row(record: dict, cost: str) -> dict:
    report = record.get("report") or {}
    pruned, ratio = report.get("pruned") or {}, report.get("ratio") or {}
    latency = pruned.get("latency", report.get("latency_ms"))
    row = {"name": record["name"], "budget": record["budget"], "seed": record["seed"],
           "status": record["status"], "reason": record.get("reason"),
           "accuracy": report.get("accuracy_after"),
           "agreement_with_seed": report.get("agreement_with_seed"),
           "macs": pruned.get("macs"), "params": pruned.get("params"),
           "macs_ratio": ratio.get("macs"), "params_ratio": ratio.get("params"),
           "latency": latency if isinstance(latency, int | float) else None,
           "seconds": record.get("seconds")}
    row["cost"] = row.get(cost) if cost in row else pruned.get(cost)
    row["cost_ratio"] = ratio.get(cost)
    return row


def _flat(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_safe(value):
    """Tuples become lists, as they will when read back from JSON."""
    return json.loads(json.dumps(value, default=str))
