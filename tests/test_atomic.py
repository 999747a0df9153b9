"""jaxcell.atomic: files appear whole or not at all; output folders are published in one rename."""

from pathlib import Path

import numpy as np
import pytest

from jaxcell.atomic import publish, staging, why_not_replaceable, write_npz, write_text


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_write_text_and_npz_round_trip(tmp_path: Path) -> None:
    write_text(tmp_path / "a.json", "{\"µm\": 1}\n")
    assert (tmp_path / "a.json").read_text("utf-8") == "{\"µm\": 1}\n"
    write_text(tmp_path / "a.json", "second")  # replaces
    assert (tmp_path / "a.json").read_text("utf-8") == "second"
    write_npz(tmp_path / "f.npz", x=np.arange(6.0).reshape(2, 3), n=np.asarray(3))
    with np.load(tmp_path / "f.npz") as z:
        np.testing.assert_array_equal(z["x"], np.arange(6.0).reshape(2, 3))
        assert int(z["n"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "f.npz"]  # no .tmp left


def test_failing_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    with pytest.raises(UnicodeEncodeError):
        write_text(target, "half \ud800 written")  # a lone surrogate cannot be encoded: fails mid-write
    assert list(tmp_path.iterdir()) == []
    write_text(target, "old")
    with pytest.raises(UnicodeEncodeError):
        write_text(target, "new \ud800")
    assert target.read_text("utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]

    frame = tmp_path / "frame.npz"
    write_npz(frame, x=np.ones(3))
    with pytest.raises(RuntimeError, match="cannot pickle"):  # np.savez fails after writing some bytes
        write_npz(frame, x=np.zeros(4), bad=np.array([_Unpicklable()], dtype=object))
    with np.load(frame) as z:
        np.testing.assert_array_equal(z["x"], np.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.npz", "summary.json"]


def test_why_not_replaceable(tmp_path: Path) -> None:
    markers = ("fit.json",)
    assert why_not_replaceable(tmp_path / "absent", markers) is None
    (tmp_path / "empty").mkdir()
    assert why_not_replaceable(tmp_path / "empty", markers) is None
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "fit.json").write_text("{}")
    (tmp_path / "ours" / "residuals.png").write_bytes(b"x")
    assert why_not_replaceable(tmp_path / "ours", markers) is None
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("years of work")
    assert why_not_replaceable(tmp_path / "theirs", markers) == "exists and is not a jaxcell output folder"
    (tmp_path / "file").write_text("x")
    assert why_not_replaceable(tmp_path / "file", markers) == "exists and is not a folder"
    # every marker is needed, not just one
    assert why_not_replaceable(tmp_path / "ours", ("fit.json", "fields.zarr")) is not None


def test_staging_publishes_on_success_and_replaces_an_earlier_output(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "result"  # parent is created
    with staging(out, ("fit.json",)) as folder:
        assert folder.parent == out.parent and folder.is_dir() and not out.exists()
        write_text(folder / "fit.json", "1")
        (folder / "old_only.png").write_bytes(b"x")
    assert (out / "fit.json").read_text() == "1"
    with staging(out, ("fit.json",)) as folder:
        write_text(folder / "fit.json", "2")
    assert sorted(p.name for p in out.iterdir()) == ["fit.json"]  # replaced whole, not merged
    assert (out / "fit.json").read_text() == "2"
    assert [p.name for p in out.parent.iterdir()] == ["result"]  # no staging or old folder left


def test_staging_failure_leaves_nothing_and_keeps_the_earlier_output(tmp_path: Path) -> None:
    out = tmp_path / "result"
    with pytest.raises(RuntimeError, match="boom"), staging(out, ("fit.json",)) as folder:
        write_text(folder / "fit.json", "partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "fit.json").write_text("earlier")
    with pytest.raises(KeyboardInterrupt), staging(out, ("fit.json",)) as folder:
        write_text(folder / "fit.json", "partial")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["result"]
    assert (out / "fit.json").read_text() == "earlier"


def test_staging_and_publish_refuse_a_folder_that_is_not_ours(tmp_path: Path) -> None:
    out = tmp_path / "result"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a jaxcell output folder"), staging(out, ("fit.json",)):
        pytest.fail("the block must not run")
    assert (out / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["result"]
    done = tmp_path / "done"
    done.mkdir()
    (done / "fit.json").write_text("new")
    with pytest.raises(FileExistsError):
        publish(done, out, ("fit.json",))
    assert (done / "fit.json").exists() and (out / "notes.txt").read_text() == "keep me"
