"""The user's data loader: every way a loader can be wrong ends in a DataError that says what
is wrong and where, before any training starts; well-formed variants are accepted."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxmorph
from onnxmorph.errors import DataError, OnnxMorphError
from onnxmorph.training.data import DataSource, InputSpec, model_input_specs
from onnxmorph.training.trainer import choose_loss, endless

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RESNET = SAMPLES / "resnet_seed.onnx"


def write_loader(tmp_path: Path, body: str, name: str = "loader.py") -> Path:
    path = tmp_path / name
    path.write_text("import numpy as np\n" + textwrap.dedent(body))
    return path


@pytest.fixture(scope="module")
def resnet_specs() -> list[InputSpec]:
    return model_input_specs(onnx.load(str(RESNET)))


def source(tmp_path: Path, body: str, specs: list[InputSpec]) -> DataSource:
    return DataSource(write_loader(tmp_path, body), specs)


def first_batch(src: DataSource):
    return next(iter(src.train()))


# -- the sample model's input, as the loader must match it --------------------------------------

def test_model_input_specs_of_sample(resnet_specs):
    assert resnet_specs == [InputSpec("input", (None, 1, 28, 28), np.dtype(np.float32))]


# -- loading the file ---------------------------------------------------------------------------

def test_missing_file(tmp_path, resnet_specs):
    missing = tmp_path / "nope.py"
    with pytest.raises(DataError, match=r"does not exist") as info:
        DataSource(missing, resnet_specs)
    assert "nope.py" in str(info.value)


def test_file_raising_on_import(tmp_path, resnet_specs):
    path = write_loader(tmp_path, "raise RuntimeError('dataset server down')\n")
    with pytest.raises(DataError, match=r"raised RuntimeError on import: dataset server down"):
        DataSource(path, resnet_specs)


def test_syntax_error_on_import(tmp_path, resnet_specs):
    path = write_loader(tmp_path, "def train_batches(:\n")
    with pytest.raises(DataError, match=r"raised SyntaxError on import"):
        DataSource(path, resnet_specs)


def test_no_train_batches(tmp_path, resnet_specs):
    path = write_loader(tmp_path, "def eval_batches():\n    return []\n")
    with pytest.raises(DataError, match=r"has no function train_batches\(\)"):
        DataSource(path, resnet_specs)


def test_train_batches_not_callable(tmp_path, resnet_specs):
    path = write_loader(tmp_path, "train_batches = [1, 2]\n")
    with pytest.raises(DataError, match=r"has no function train_batches\(\)"):
        DataSource(path, resnet_specs)


def test_train_batches_raising_when_called(tmp_path, resnet_specs):
    src = source(tmp_path, """
        def train_batches():
            raise FileNotFoundError('images/')
        """, resnet_specs)
    with pytest.raises(DataError, match=r"train_batches\(\) raised FileNotFoundError: images/"):
        first_batch(src)


def test_train_batches_raising_mid_epoch_names_the_batch(tmp_path, resnet_specs):
    src = source(tmp_path, """
        def train_batches():
            yield np.zeros((2, 1, 28, 28), np.float32)
            raise ValueError('corrupt record')
        """, resnet_specs)
    with pytest.raises(DataError, match=r"raised ValueError at batch 1: corrupt record"):
        list(src.train())


def test_train_batches_not_iterable(tmp_path, resnet_specs):
    src = source(tmp_path, "def train_batches():\n    return 5\n", resnet_specs)
    with pytest.raises(DataError, match=r"train_batches\(\) raised TypeError"):
        first_batch(src)


def test_empty_train_batches_in_training_loop(tmp_path, resnet_specs):
    src = source(tmp_path, "def train_batches():\n    return []\n", resnet_specs)
    with pytest.raises(DataError, match=r"yielded no batches"):
        next(endless(src))


# -- batch validation ---------------------------------------------------------------------------

@pytest.mark.parametrize(("batch", "pattern"), [
    # rank: an image without its channel axis
    ("np.zeros((4, 28, 28), np.float32)", r"batch 0: input 'input' has shape \(4, 28, 28\), "
     r"the model expects rank 4 \[N, 1, 28, 28\]"),
    # a static axis differs
    ("np.zeros((4, 3, 28, 28), np.float32)", r"has shape \(4, 3, 28, 28\), the model expects "
     r"\[N, 1, 28, 28\] \(axis 1 differs\)"),
    ("np.zeros((4, 1, 32, 32), np.float32)", r"\(axis 2 differs\)"),
    # integer images for a float input
    ("np.zeros((4, 1, 28, 28), np.int64)", r"input 'input' has dtype int64, the model expects "
     r"float32"),
    ("np.zeros((4, 1, 28, 28), np.uint8)", r"has dtype uint8, the model expects float32"),
    # a dict with the wrong input name
    ("{'x': np.zeros((4, 1, 28, 28), np.float32)}", r"missing inputs \['input'\], unknown "
     r"inputs \['x'\]"),
    ("{'input': np.zeros((4, 1, 28, 28), np.float32), 'mask': np.zeros(4)}",
     r"missing inputs \[\], unknown inputs \['mask'\]"),
    # labels for a different number of samples
    ("(np.zeros((4, 1, 28, 28), np.float32), np.zeros(3, np.int64))",
     r"inputs and labels disagree on the batch size"),
    ("(np.zeros((4, 1, 28, 28), np.float32), np.int64(3))",
     r"inputs and labels disagree on the batch size"),
    # not an array at all
    ("'abc'", r"input 'input' has shape \(\), the model expects rank 4"),
])
def test_bad_batches(tmp_path, resnet_specs, batch, pattern):
    src = source(tmp_path, f"""
        def train_batches():
            yield {batch}
        """, resnet_specs)
    with pytest.raises(DataError, match=pattern) as info:
        first_batch(src)
    assert "train_batches() batch 0" in str(info.value)


def test_bad_batch_is_named_by_index(tmp_path, resnet_specs):
    src = source(tmp_path, """
        def train_batches():
            yield np.zeros((4, 1, 28, 28), np.float32)
            yield np.zeros((4, 1, 28, 28), np.float32)
            yield np.zeros((4, 1, 27, 28), np.float32)
        """, resnet_specs)
    with pytest.raises(DataError, match=r"train_batches\(\) batch 2: "):
        list(src.train())


def test_eval_batches_are_validated_too(tmp_path, resnet_specs):
    src = source(tmp_path, """
        def train_batches():
            yield np.zeros((4, 1, 28, 28), np.float32)
        def eval_batches():
            yield np.zeros((4, 1, 28, 28), np.int32)
        """, resnet_specs)
    assert src.has_eval
    with pytest.raises(DataError, match=r"eval_batches\(\) batch 0: .*dtype int32"):
        list(src.eval())


def test_several_inputs_need_a_dict(tmp_path):
    specs = [InputSpec("a", (None, 3), np.dtype(np.float32)),
             InputSpec("b", (None, 3), np.dtype(np.float32))]
    src = source(tmp_path, """
        def train_batches():
            yield np.zeros((2, 3), np.float32)
        """, specs)
    with pytest.raises(DataError, match=r"several inputs \(a, b\); yield a dict"):
        first_batch(src)


def test_several_inputs_disagreeing_on_batch_size(tmp_path):
    specs = [InputSpec("a", (None, 3), np.dtype(np.float32)),
             InputSpec("b", (None, 3), np.dtype(np.float32))]
    src = source(tmp_path, """
        def train_batches():
            yield {'a': np.zeros((2, 3), np.float32), 'b': np.zeros((5, 3), np.float32)}
        """, specs)
    with pytest.raises(DataError, match=r"disagree on the batch size"):
        first_batch(src)


# -- accepted variants --------------------------------------------------------------------------

def test_dict_for_single_input_is_accepted(tmp_path, resnet_specs):
    src = source(tmp_path, """
        def train_batches():
            yield {'input': np.ones((4, 1, 28, 28), np.float32)}, np.arange(4)
        """, resnet_specs)
    batch = first_batch(src)
    assert list(batch.inputs) == ["input"]
    assert batch.inputs["input"].shape == (4, 1, 28, 28)
    assert batch.size == 4
    np.testing.assert_array_equal(batch.labels, np.arange(4))


@pytest.mark.parametrize("wrap", ["({x}, {y})", "[{x}, {y}]"])
def test_tuple_or_list_of_inputs_and_labels(tmp_path, resnet_specs, wrap):
    body = wrap.format(x="np.ones((3, 1, 28, 28), np.float32)", y="[0, 1, 2]")
    src = source(tmp_path, f"def train_batches():\n    yield {body}\n", resnet_specs)
    batch = first_batch(src)
    assert batch.size == 3
    assert batch.labels.tolist() == [0, 1, 2]


def test_float64_inputs_are_cast_and_inputs_only_have_no_labels(tmp_path, resnet_specs):
    src = source(tmp_path, """
        def train_batches():
            yield np.full((2, 1, 28, 28), 0.5)
        """, resnet_specs)
    batch = first_batch(src)
    assert batch.inputs["input"].dtype == np.float32
    assert batch.labels is None
    assert batch.inputs["input"].flags["C_CONTIGUOUS"]


def test_any_batch_size_for_a_dynamic_batch_axis(tmp_path, resnet_specs):
    src = source(tmp_path, """
        def train_batches():
            for n in (1, 7, 64):
                yield np.zeros((n, 1, 28, 28), np.float32), np.zeros(n, np.int64)
        """, resnet_specs)
    assert [b.size for b in src.train()] == [1, 7, 64]


def test_without_eval_batches_eval_uses_train_batches(tmp_path, resnet_specs):
    src = source(tmp_path, """
        def train_batches():
            yield np.zeros((2, 1, 28, 28), np.float32), np.array([3, 4])
        """, resnet_specs)
    assert not src.has_eval
    assert [b.labels.tolist() for b in src.eval()] == [[3, 4]]


def test_every_call_is_a_new_epoch(tmp_path, resnet_specs):
    src = source(tmp_path, """
        calls = []
        def train_batches():
            calls.append(1)
            yield np.full((1, 1, 28, 28), len(calls), np.float32)
        """, resnet_specs)
    stream = endless(src)
    values = [float(next(stream).inputs["input"][0, 0, 0, 0]) for _ in range(3)]
    assert values == [1.0, 2.0, 3.0]


def test_two_loaders_with_the_same_module_name_do_not_clash(tmp_path, resnet_specs):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = DataSource(write_loader(tmp_path / "a", """
        def train_batches():
            yield np.zeros((1, 1, 28, 28), np.float32), np.array([1])
        """), resnet_specs)
    two = DataSource(write_loader(tmp_path / "b", """
        def train_batches():
            yield np.zeros((1, 1, 28, 28), np.float32), np.array([2])
        """), resnet_specs)
    assert first_batch(one).labels.tolist() == [1]
    assert first_batch(two).labels.tolist() == [2]


# -- choosing the loss from the labels ----------------------------------------------------------

def test_loss_follows_the_labels(tmp_path, resnet_specs):
    def batch_of(labels: str):
        return first_batch(source(tmp_path, f"""
            def train_batches():
                yield {labels}
            """, resnet_specs))

    x = "np.zeros((2, 1, 28, 28), np.float32)"
    # Labels present: cross-entropy plus distillation from the seed (the default).
    assert choose_loss("auto", batch_of(f"({x}, np.array([1, 2]))")) == "ce+distill"
    assert choose_loss("cross-entropy", batch_of(f"({x}, np.array([1, 2]))")) == "cross-entropy"
    assert choose_loss("auto", batch_of(f"({x}, np.zeros((2, 10), np.float32))")) == "mse"
    unlabeled = batch_of(x)
    assert choose_loss("auto", unlabeled) == "distill"
    assert choose_loss("distill", unlabeled) == "distill"
    with pytest.raises(DataError, match="ce\\+distill needs integer class indices"):
        choose_loss("ce+distill", batch_of(f"({x}, np.zeros((2, 10), np.float32))"))
    for loss in ("cross-entropy", "mse", "ce+distill"):
        with pytest.raises(DataError, match=r"needs labels.*use --loss distill"):
            choose_loss(loss, unlabeled)


# -- through the API: a bad loader fails before any training ------------------------------------

@pytest.mark.parametrize(("body", "pattern"), [
    (None, r"does not exist"),
    ("raise ImportError('no module named cv2')\n", r"raised ImportError on import"),
    ("def eval_batches():\n    return []\n", r"has no function train_batches"),
    ("def train_batches():\n    yield np.zeros((2, 1, 28, 28), np.int64)\n",
     r"has dtype int64, the model expects float32"),
    ("def train_batches():\n    yield {'image': np.zeros((2, 1, 28, 28), np.float32)}\n",
     r"missing inputs \['input'\], unknown inputs \['image'\]"),
    ("def train_batches():\n    yield np.zeros((2, 1, 28, 28), np.float32), np.zeros(5)\n",
     r"disagree on the batch size"),
    ("def train_batches():\n    return iter([])\n", r"yielded no batches"),
])
def test_prune_reports_bad_loader_as_data_error(tmp_path, body, pattern):
    path = tmp_path / "missing.py" if body is None else write_loader(tmp_path, body)
    out = tmp_path / "out.onnx"
    with pytest.raises(DataError, match=pattern):
        result = onnxmorph.prune(str(RESNET), data=str(path), budget=0.5,
                                 training=dict(steps=2, workdir=str(tmp_path / "work")))
        result.save(out)
    assert not out.exists()
    # Nothing was trained: failing on the data comes before building artifacts.
    assert not (tmp_path / "work").exists()


def test_bad_training_options_are_reported(tmp_path):
    path = write_loader(tmp_path, "def train_batches():\n    return []\n")
    with pytest.raises(OnnxMorphError, match=r"unknown loss 'hinge'"):
        onnxmorph.prune(str(RESNET), data=str(path), training=dict(loss="hinge"))
    with pytest.raises(OnnxMorphError, match=r"--steps must be at least 1"):
        onnxmorph.prune(str(RESNET), data=str(path), training=dict(steps=0))
