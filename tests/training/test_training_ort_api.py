import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout.strip()


def test_package_import_is_light():
    out = _run("import sys, onnxmorph.training; print('onnxruntime' in sys.modules)")
    assert out == "False"


def test_training_modules_load_without_torch():
    code = (
        "import sys\n"
        "from onnxmorph.training.ort_api import import_training_modules\n"
        "artifacts, onnxblock, api = import_training_modules()\n"
        "print(hasattr(artifacts, 'generate_artifacts'), hasattr(api, 'Module'),"
        " 'torch' in sys.modules)"
    )
    assert _run(code) == "True True False"
