"""Atomic outputs: files that appear whole or not at all, and folders published in one rename.

Used by ``jaxcell run`` (:mod:`jaxcell.io`) and ``jaxcell fit`` (:mod:`jaxcell.fit_cli`):

* :func:`write_text`, :func:`write_npz`: write ``path.tmp`` beside the target,
  flush it to disk, then rename it over ``path`` (``os.replace``, atomic on one
  file system). A failed write removes the temporary file and leaves an
  earlier ``path`` untouched.
* :func:`why_not_replaceable`: whether an output folder may be (re)written:
  jaxcell only replaces a folder that is absent, empty, or holds the marker
  files of an earlier jaxcell output.
* :func:`staging`: a context manager giving a temporary folder beside the
  output folder; on success it is renamed into place (replacing an earlier
  output), on an exception it is removed, so no half-written folder is ever seen.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["publish", "staging", "why_not_replaceable", "write_npz", "write_text"]


def _write(path: Path, mode: str, fill: Callable[[IO], None], **open_kw: str) -> None:
    """Write ``path`` through ``path.tmp`` (``fill(handle)`` writes the content), fsync, rename into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **open_kw) as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: readers see the old file or the whole new one."""
    _write(Path(path), "w", lambda fh: fh.write(text), encoding="utf-8")


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` (name -> array, any shapes) as an ``.npz`` to ``path`` atomically (``np.savez``)."""
    _write(Path(path), "wb", lambda fh: np.savez(fh, **arrays))


def why_not_replaceable(out: str | Path, markers: Collection[str]) -> str | None:
    """Why the output folder ``out`` may not be written or replaced, or None when it may.

    ``out`` may be replaced when it does not exist, is an empty folder, or is a
    folder that holds every name in ``markers`` (the files an earlier jaxcell
    output of that kind always has, e.g. ``("fit.json",)``).

    Returns:
        None, ``"exists and is not a folder"`` or ``"exists and is not a jaxcell
        output folder"`` (a sentence fragment for the caller's error message).
    """
    out = Path(out)
    if not out.exists():
        return None
    if not out.is_dir():
        return "exists and is not a folder"
    entries = set(os.listdir(out))
    if entries and not set(markers) <= entries:
        return "exists and is not a jaxcell output folder"
    return None


def publish(folder: str | Path, out: str | Path, markers: Collection[str]) -> None:
    """Rename the finished ``folder`` to ``out``, replacing an earlier output there (see :func:`why_not_replaceable`).

    An earlier ``out`` is first renamed aside (beside ``out``), then ``folder``
    is renamed to ``out``, then the old one is deleted; ``out`` is therefore never
    half-written. ``folder`` and ``out`` must be on the same file system.

    Raises:
        FileExistsError: ``out`` exists and may not be replaced; ``folder`` is left as it is.
    """
    folder, out = Path(folder), Path(out)
    problem = why_not_replaceable(out, markers)
    if problem is not None:
        raise FileExistsError(f"{out}: {problem}; jaxcell only replaces folders it wrote")
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(folder, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staging(out: str | Path, markers: Collection[str]) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; renamed to ``out`` when the block ends without error.

    Yields the temporary folder (``.<name>.XXXX.partial`` in ``out``'s parent,
    which is created if needed). On success :func:`publish` renames it to ``out``
    (``markers`` as there); on any exception, including ``KeyboardInterrupt``,
    the temporary folder is removed and ``out`` is left untouched.

    Raises:
        FileExistsError: ``out`` exists and may not be replaced (checked before
            anything is written, and again when publishing).
    """
    out = Path(out).absolute()
    problem = why_not_replaceable(out, markers)
    if problem is not None:
        raise FileExistsError(f"{out}: {problem}; jaxcell only replaces folders it wrote")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
        publish(tmp, out, markers)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
