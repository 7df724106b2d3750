"""Output files: checked before any work, written as a consistent set, never half-written.

A result is several files (model, structure JSON, report JSON, PNG). `write_file_set` writes
every one to a temporary in the target folder first and renames them into place only when all
were written — the model last-but-one and the report last, so a report on disk always
describes the model beside it. If a rename fails, the renames already made are rolled back
from hard-link backups. SIGINT/SIGTERM are held back while the temporaries exist
(`deferred_signals`), so no `.tmp` survives an interruption the process can see.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import onnx

from onnxmorph.errors import OnnxMorphError

# A file's content: its bytes, or a function that writes the file at the path it is given
# (for writers that insist on a path, such as the plot) and returns False if it wrote nothing.
Content = bytes | Callable[[Path], bool]


class OutputPathError(OnnxMorphError):
    """An output path cannot be written, or would overwrite one of the inputs."""


class OutputWriteError(OutputPathError):
    """Writing the result failed (disk full, file-size limit): the environment, not a bug."""


def check_output_path(path: str | os.PathLike,
                      inputs: Sequence[str | os.PathLike | None] = ()) -> Path:
    """Refuse, before any work, an output that cannot be written or that is one of `inputs`
    (the same path, a symlink to it or a hard link of it)."""
    path = Path(path)
    folder = path.parent
    if not folder.resolve().is_dir():
        raise OutputPathError(f"output folder '{folder}' does not exist; create it first")
    if path.is_dir():
        raise OutputPathError(f"output path '{path}' is a folder; name a file")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise OutputPathError(
                f"output '{path}' is the input '{source}' (or a link to it); writing it would "
                "destroy the input: choose another output path")
    _check_writable(folder)
    return path


def check_distinct_outputs(paths: Sequence[str | os.PathLike | None]) -> None:
    """Two outputs of one command (say -o and --log) must not be the same file."""
    seen: dict[str, Path] = {}
    for path in (Path(p) for p in paths if p is not None):
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            raise OutputPathError(f"'{path}' is given as two different outputs; name each once")
        seen[key] = path


def _same_file(a: Path, b: Path) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_writable(folder: Path) -> None:
    # os.access says yes to root on a read-only mount; creating a file is the real test.
    try:
        fd, probe = tempfile.mkstemp(prefix=".onnxmorph-probe.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputPathError(
            f"cannot write to output folder '{folder}' ({exc.strerror or exc}); "
            "choose a writable folder") from None
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the duration; they take effect when the block ends.

    Anything that must not be interrupted halfway (a set of renames, a checkpoint) goes in
    here: after the block, the handler that was installed (or the default action) runs on a
    consistent state. Python-level handlers rather than a signal mask: onnxruntime's and
    BLAS's threads do not share the main thread's mask, and would take the signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(received):
            signal.raise_signal(sig)


def file_mode() -> int:
    """0666 minus the umask: what `open()` would give a new file (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_file_set(files: dict[Path, Content]) -> list[Path]:
    """Write every file of a result, all or nothing; return the paths written, in order.

    `files` is in commit order: put the model last-but-one and the report last. A callable
    that returns False (nothing to write, e.g. no matplotlib) is skipped.
    """
    temporaries: dict[Path, Path] = {}
    path = None
    with deferred_signals():
        try:
            for path, content in files.items():
                tmp = _temporary(path)
                temporaries[path] = tmp
                if callable(content):
                    if not content(tmp):
                        del temporaries[path]
                        tmp.unlink(missing_ok=True)
                        continue
                else:
                    tmp.write_bytes(content)
                os.chmod(tmp, file_mode())
            _commit(temporaries)
        except OSError as exc:  # disk full, a file-size limit (ulimit -f), a quota
            raise OutputWriteError(
                f"could not write '{path}': {exc.strerror or exc}; nothing was written or "
                "replaced — free space (or raise the limit) and run again") from exc
        finally:
            for tmp in temporaries.values():
                tmp.unlink(missing_ok=True)
    return list(temporaries)


def _temporary(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def _commit(temporaries: dict[Path, Path]) -> None:
    """Rename each temporary onto its target; on a failure, put the old files back."""
    backups: dict[Path, Path | None] = {}
    try:
        for path, tmp in temporaries.items():
            backups[path] = _backup(path)
            os.replace(tmp, path)
    except BaseException:
        for path, backup in backups.items():
            if backup is not None:
                os.replace(backup, path)
            elif not temporaries[path].exists():  # renamed in, and there was nothing before
                path.unlink(missing_ok=True)
        raise
    finally:
        for backup in backups.values():
            if backup is not None:
                backup.unlink(missing_ok=True)


def _backup(path: Path) -> Path | None:
    if not path.is_file():
        return None
    backup = _temporary(path)
    backup.unlink()
    try:
        os.link(path, backup)  # a hard link: the old content stays, nothing is copied
    except OSError:  # a file system without hard links
        shutil.copyfile(path, backup)
    return backup


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = check_output_path(path)
    write_file_set({path: data})


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    write_atomic(path, model.SerializeToString())


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def save_json(obj, path: str | os.PathLike) -> None:
    write_atomic(path, json_bytes(obj))


def sidecar(path: str | os.PathLike, suffix: str) -> Path:
    """`out/model.onnx` → `out/model.<suffix>`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{suffix}")
