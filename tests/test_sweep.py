"""The budget sweep: runs as plain functions, resumption, failures, Pareto output, and the
whole sweep on a local Ray instance (2 workers) on the ResNet sample."""

import json
import os
import signal
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from onnxmorph.cli.main import cli
from onnxmorph.errors import OnnxMorphError, SweepError
from onnxmorph.pareto import pareto_front
from onnxmorph.sweep import finished_run, plan_runs, record_crash, run_one, summarize
from tests.sample_loaders import write_sample_loader

# Importing Ray sets RAY_CLIENT_MODE once per process: import it at collection, so that the
# first test to import it is not reported as leaking it (tests/conftest.py).
try:
    import ray  # noqa: F401
except ImportError:
    pass

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
RESNET = str(SAMPLES / "resnet_seed.onnx")
STEPS = {"steps": 6, "finetune_steps": 2}

@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    return str(write_sample_loader(tmp_path_factory.mktemp("sweep_loader") / "loader.py"))


def _plan(loader, outdir, budgets, **kw):
    return plan_runs(RESNET, data=loader, budgets=budgets, seeds=kw.pop("seeds", [0]),
                     outdir=outdir, method="auto", target="flops",
                     training=kw.pop("training", STEPS), threads_per_run=1, **kw)


@pytest.fixture(scope="module")
def finished(loader, tmp_path_factory):
    """A sweep folder in which the run at budget 0.5, seed 0 is already done."""
    outdir = tmp_path_factory.mktemp("sweep_out")
    (spec,) = _plan(loader, outdir, [0.5])
    return outdir, spec, run_one(spec)


def test_run_one_writes_a_whole_run_folder(finished):
    outdir, spec, record = finished
    folder = outdir / "run-b0.5-s0"
    assert record["status"] == "done" and record["reason"] is None
    assert {p.name for p in folder.iterdir()} >= {
        "model.onnx", "model.structure.json", "model.report.json", "train.jsonl", "run.json"}
    assert not list(outdir.glob(".*partial"))
    report = json.loads((folder / "model.report.json").read_text())
    assert report["ratio"]["macs"] <= 0.5 + 1e-9 and report["accuracy_after"] is not None
    onnx.checker.check_model(onnx.load(str(folder / "model.onnx")))
    assert finished_run(spec)["status"] == "resumed"


def test_a_finished_run_with_other_settings_is_refused(finished, loader):
    outdir, _, _ = finished
    (changed,) = _plan(loader, outdir, [0.5], training={**STEPS, "steps": 7})
    with pytest.raises(SweepError, match=r"other settings \(training.steps\)"):
        finished_run(changed)
    # Threads and device change speed, not the run: the finished run still counts.
    (faster,) = _plan(loader, outdir, [0.5], training={**STEPS, "threads": 2})
    assert finished_run(faster) is not None


def test_a_failing_run_is_recorded_not_raised(loader, tmp_path):
    (spec,) = _plan(loader, tmp_path, [0.001])  # below the smallest reachable cost
    record = run_one(spec)
    assert record["status"] == "failed" and "cannot be met" in record["reason"]
    assert "\n" not in record["reason"]
    stored = json.loads((tmp_path / "run-b0.001-s0" / "run.json").read_text())
    assert stored["status"] == "failed" and stored["reason"] == record["reason"]
    assert finished_run(spec) is None  # a failed run is tried again next time


def test_a_run_whose_task_died_is_recorded_as_failed(loader, tmp_path):
    (spec,) = _plan(loader, tmp_path, [0.5])
    partial = tmp_path / ".run-b0.5-s0.partial"
    partial.mkdir()
    (partial / "model.onnx").write_bytes(b"half")
    record = record_crash(spec, RuntimeError("worker killed\nlong Ray text"))
    assert record["status"] == "failed" and record["reason"].endswith("worker killed")
    assert not partial.exists()
    assert json.loads((tmp_path / "run-b0.5-s0" / "run.json").read_text())["status"] == "failed"
    assert finished_run(spec) is None


def test_more_threads_per_run_than_cores_is_refused_before_ray_starts(loader, tmp_path):
    pytest.importorskip("ray")
    from onnxmorph.sweep_ray import local_cores, run_on_ray

    (spec,) = _plan(loader, tmp_path, [0.5])
    with pytest.raises(SweepError, match="more than this machine"):
        run_on_ray([spec], run_one, address=None, threads=local_cores() + 1, gpus=0)
    assert not _ray_processes()


@pytest.mark.parametrize("kw, match", [
    ({"budgets": [0.5, 1.5]}, "outside"),
    ({"budgets": []}, "at least one budget"),
    ({"budgets": [0.5, 0.5]}, "repeat a run"),
    ({"budgets": [0.5], "target": "watts"}, "unknown target"),
    ({"budgets": [0.5], "data": "missing_loader.py"}, "does not exist"),
    ({"budgets": [0.5], "training": {"steps": 0}}, "--steps"),
])
def test_bad_arguments_fail_before_anything_runs(loader, tmp_path, kw, match):
    args = {"data": loader, "seeds": [0], "outdir": tmp_path / "out", "method": "auto",
            "target": "flops", "training": STEPS, "threads_per_run": 1, **kw}
    with pytest.raises(OnnxMorphError, match=match):
        plan_runs(RESNET, **args)
    assert not (tmp_path / "out").exists()


def _record(name, budget, seed, accuracy, macs, status="done", agreement=None):
    report = {"accuracy_after": accuracy, "agreement_with_seed": agreement,
              "pruned": {"macs": macs, "params": 10}, "ratio": {"macs": macs / 100,
                                                                "params": 0.5}}
    return {"name": name, "budget": budget, "seed": seed, "status": status,
            "reason": None if status == "done" else "boom",
            "report": report if status == "done" else None}


def test_summary_marks_the_front_and_writes_json_and_png(tmp_path):
    records = [_record("a", 0.3, 0, 0.80, 30), _record("b", 0.5, 0, 0.85, 50),
               _record("c", 0.5, 1, 0.84, 50), _record("d", 0.75, 0, 0.85, 75),
               _record("e", 0.9, 0, None, 90, status="failed")]
    result = summarize(records, tmp_path, "flops")
    assert [r["on_front"] for r in result.runs] == [True, True, False, False, False]
    assert [r["name"] for r in result.front] == ["a", "b"]
    assert json.loads((tmp_path / "pareto.json").read_text()) == result.to_dict()
    assert result.runs[4]["reason"] == "boom" and result.runs[4]["cost"] is None
    if result.plot == tmp_path / "pareto.png":  # matplotlib installed
        assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_without_labels_the_front_uses_agreement_with_the_seed(tmp_path):
    records = [_record("a", 0.3, 0, None, 30, agreement=0.7),
               _record("b", 0.5, 0, None, 50, agreement=0.6)]
    result = summarize(records, tmp_path, "params")
    assert result.quality == "agreement_with_seed" and result.cost == "params"
    # Equal params: the more faithful run alone is on the front.
    assert [r["on_front"] for r in result.runs] == [True, False]


def test_without_ray_the_cli_says_so_in_one_line(loader, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when not installed
    result = CliRunner().invoke(cli, ["sweep", RESNET, "--data", loader, "--budgets", "0.5",
                                      "-o", str(tmp_path / "out"), "--log",
                                      str(tmp_path / "sweep.jsonl")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "pip install 'onnxmorph[sweep]'" in result.output
    assert not list(tmp_path.iterdir())


def _ray_processes() -> list[str]:
    """Command lines of this test process's descendants that belong to Ray."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
        except OSError:
            continue
    return [c for c in found if "ray" in c]


def test_sweep_on_local_ray_resumes_and_survives_a_failed_run(finished, loader, tmp_path):
    pytest.importorskip("ray")
    outdir, _, before = finished
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    environment = dict(os.environ)
    kept = (outdir / "run-b0.5-s0" / "model.onnx").stat().st_mtime_ns
    result = CliRunner().invoke(cli, [
        "sweep", RESNET, "--data", loader, "--budgets", "0.001,0.3,0.5,0.75", "--steps",
        str(STEPS["steps"]), "--finetune-steps", str(STEPS["finetune_steps"]),
        "-o", str(outdir), "--log", str(tmp_path / "sweep.jsonl")])
    assert result.exit_code == 1, result.output  # one run failed; the others finished
    assert not _ray_processes()
    # Ray's SIGTERM handler does not outlive the sweep (it broke later in-process SIGTERMs).
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert dict(os.environ) == environment  # nor Ray's PYTHONBREAKPOINT and RAY_* variables
    pareto = json.loads((outdir / "pareto.json").read_text())
    runs = {r["name"]: r for r in pareto["runs"]}
    assert [runs[n]["status"] for n in ("run-b0.001-s0", "run-b0.3-s0", "run-b0.5-s0",
                                        "run-b0.75-s0")] == ["failed", "done", "resumed", "done"]
    assert "cannot be met" in runs["run-b0.001-s0"]["reason"]
    assert (outdir / "run-b0.5-s0" / "model.onnx").stat().st_mtime_ns == kept
    assert runs["run-b0.5-s0"]["accuracy"] == before["report"]["accuracy_after"]
    for name, budget in (("run-b0.3-s0", 0.3), ("run-b0.75-s0", 0.75)):
        assert runs[name]["macs_ratio"] <= budget + 1e-9
        assert (outdir / name / "model.onnx").is_file()
    expected = pareto_front([(r["accuracy"], r["macs"]) for r in pareto["runs"]])
    assert [r["on_front"] for r in pareto["runs"]] == expected and any(expected)
    assert "run-b0.75-s0" in result.output and "failed" in result.output
    logged = [json.loads(line) for line in (tmp_path / "sweep.jsonl").read_text().splitlines()]
    assert sorted((r["name"], r["status"]) for r in logged) == sorted(
        (name, r["status"]) for name, r in runs.items())
    # Two workers on two cores: the two trained runs overlapped in time.
    done = [json.loads((outdir / n / "run.json").read_text()) for n in
            ("run-b0.3-s0", "run-b0.75-s0")]
    if (os.cpu_count() or 1) >= 2:
        assert max(r["started"] for r in done) < min(r["started"] + r["seconds"] for r in done)
    # The Python API returns what pareto.json holds; finished runs are not redone.
    import onnxmorph

    again = onnxmorph.sweep(RESNET, data=loader, budgets=[0.3, 0.5, 0.75], outdir=outdir,
                            training=STEPS)
    assert [r["status"] for r in again.runs] == ["resumed"] * 3
    assert again.to_dict() == json.loads((outdir / "pareto.json").read_text())
