"""jaxcell run under hostile conditions: interrupted and resumed with --set values, Ctrl-C inside
a long frame, unwritable or busy output folders, grids too big for memory."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scenario_cases import write_small

import jaxcell.io as jio
from jaxcell.cli import main
from jaxcell.scenario import load

xr = pytest.importorskip("xarray")
pytest.importorskip("zarr")
pytest.importorskip("matplotlib")


def quiet(_: str) -> None:
    """A ``log`` that drops run_scenario's one-line notes."""


def _hint(err: str) -> list[str]:
    """The command after 'continue with: ' on stderr, split as a shell would, without 'jaxcell'."""
    line = [ln for ln in err.splitlines() if "continue with: " in ln]
    assert len(line) == 1, err
    words = shlex.split(line[0].split("continue with: ", 1)[1])
    assert words[:2] == ["jaxcell", "run"] and words[-1] == "--resume", words
    return words[1:]


def test_resume_command_as_printed_keeps_the_set_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path)
    out = tmp_path / "my out"  # a space: the printed command must quote it
    sets = ["--set", "run.t_end=30", "--set", 'title="a title; with $pace"']
    assert main(["run", str(path), "--out", str(out), *sets, "--stop-after-chunks", "1", "--no-figures"]) == 3
    argv = _hint(capsys.readouterr().err)
    assert argv.count("--set") == 2 and "run.t_end=30" in argv and 'title="a title; with $pace"' in argv
    assert str(out) in argv
    # run exactly as printed (no figures, to be quick): it continues, it is not refused
    assert main([*argv, "--no-figures", "--stop-after-chunks", "0"]) == 3, capsys.readouterr().err
    capsys.readouterr()
    # --resume alone reuses the stored values
    assert main(["run", str(path), "--out", str(out), "--resume", "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "resuming with the interrupted run's settings: --set run.t_end=30" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["t_end_s"] == 30 and summary["title"] == "a title; with $pace" and summary["resumed"]


def test_resume_with_other_set_values_is_refused_clearly(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--set", "run.t_end=30", "--stop-after-chunks", "0"]) == 3
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out), "--set", "run.t_end=45", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("jaxcell: error: ")
    assert "different scenario or settings" in err
    assert "with --set run.t_end=30" in err and "with --set run.t_end=45" in err
    assert "--resume alone" in err and "without --resume" in err


def test_frames_split_into_bounded_calls_give_the_same_numbers(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # dt = 5 s, frames every 29 s: each frame is five 5-s steps and a short 4-s step; the last one (58 -> 60 s)
    # one 2-s step. Split calls spread a frame's steps evenly, at least 2 per call: the same steps, so the same
    # numbers to round-off (XLA may fuse a loop of a few steps differently, a last-bit difference).
    sc = load(write_small(tmp_path), ["run.save_every=29"])
    assert jio.steps_per_call(sc) == int(2e8 // (2 * (12 * 10 * 6 + jio.CELL_WORK * sc.n_cells)))
    calls: list[tuple[float, float]] = []
    real = jio.simulate

    def spy(model, state, t_end, dt, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append((float(state.t_static), float(t_end)))
        return real(model, state, t_end, dt, **kw)

    ref = tmp_path / "ref"
    monkeypatch.setattr(jio, "simulate", spy)
    jio.run_scenario(sc, ref, figures=False, progress=False, log=quiet)
    unsplit, calls[:] = list(calls), []
    assert len(unsplit) == 3 + 1  # one per frame, and the dry run
    split = tmp_path / "split"
    jio.run_scenario(sc, split, figures=False, progress=False, log=quiet, max_steps_per_call=1)
    ends = [b for _, b in calls[1:]]
    np.testing.assert_allclose(ends, [10, 20, 29, 39, 49, 58, 60], rtol=0, atol=1e-12)
    a, b = xr.open_zarr(ref / "fields.zarr"), xr.open_zarr(split / "fields.zarr")
    for var in ("concentration", "bound_receptors", "free_receptors", "secretion", "local_concentration"):
        np.testing.assert_allclose(b[var].values, a[var].values, rtol=1e-12, atol=1e-300, err_msg=var)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, split))
    assert sa["steps"] == sb["steps"] == 13


def test_ctrl_c_inside_a_long_frame_stops_between_calls(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_small(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(jio, "WORK_PER_CALL", 1.0)  # the fewest steps per call: 2
    calls: list[float] = []
    real = jio.simulate

    def interrupting(model, state, t_end, dt, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append(float(t_end))
        if len(calls) == 3:  # the dry run, steps 1-2 of frame 1 (0-30 s), then a Ctrl-C during steps 3-4
            raise KeyboardInterrupt
        return real(model, state, t_end, dt, **kw)

    monkeypatch.setattr(jio, "simulate", interrupting)
    assert main(["run", str(path), "--out", str(out), "--no-figures", "--set", "run.save_every=30"]) == 130
    assert calls[1:] == [10.0, 20.0]  # the frame was being advanced two steps per call
    argv = _hint(capsys.readouterr().err)
    assert not (tmp_path / "out.partial" / jio._LOCK).exists()  # the lock is released
    monkeypatch.setattr(jio, "simulate", real)
    assert main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 12


def test_unwritable_out_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["run", str(path), "--out", str(afile / "out"), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(afile) in err and "cannot write" in err and "choose an --out" in err
    assert afile.read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["run", str(path), "--out", str(ro / "out"), "--no-figures"]) == 2
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write" in err and "Permission denied" in err, err


def test_second_run_into_the_same_out_is_refused_and_stale_lock_taken_over(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path)
    out = tmp_path / "out"
    part = tmp_path / "out.partial"
    part.mkdir()
    host = __import__("socket").gethostname()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (part / "jaxcell.lock").write_text(json.dumps({"pid": other.pid, "host": host}))
        assert main(["run", str(path), "--out", str(out), "--no-figures"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"another jaxcell run (process {other.pid} on {host})" in err
        assert f"delete {part / 'jaxcell.lock'}" in err
        assert not out.exists() and sorted(p.name for p in part.iterdir()) == ["jaxcell.lock"]
    finally:
        other.kill()
        other.wait()
    # the holder is gone: its lock is stale and the next run takes it over
    assert main(["run", str(path), "--out", str(out), "--no-figures"]) == 0, capsys.readouterr().err
    assert (out / "summary.json").exists() and not part.exists()


def test_two_locks_cannot_both_be_taken(tmp_path: Path) -> None:
    lock = jio._take_lock(tmp_path)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    with pytest.raises(jio.OutputError, match=f"process {os.getpid()} on"):
        jio._take_lock(tmp_path)
    jio._release_lock(lock)
    assert not lock.exists()


@pytest.mark.parametrize("scenario", ["paracrine_niche", "vessel"])
def test_grid_too_big_for_memory_is_one_line(scenario: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = main(["run", scenario, "--out", str(out), "--set", "grid.shape=[40000,40000,40000]"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("jaxcell: error: ") and "iB" in err and "grid.shape" in err, err
    assert not list(tmp_path.iterdir())


def test_float32_run_builds_its_initial_fields_in_float32(tmp_path: Path) -> None:
    """No float64 grid-size copy in a float32 run (the vessel scenario starts at 38 everywhere)."""
    code = """
import numpy as np, jax
assert not jax.config.read("jax_enable_x64")
import jaxcell.model as m
from jaxcell.scenario import load
seen = []
real = m.Model.init
def spy(self, cells=None, fields=None, **kw):
    seen.append(None if fields is None else np.asarray(fields).dtype)
    return real(self, cells, fields, **kw)
m.Model.init = spy
st = load("vessel", ["grid.shape=[15,15,8]", "grid.spacing=40.0"]).init_state()
print(seen, st.fields.dtype, float(st.fields.min()), float(st.fields.max()))
"""
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["[dtype('float32')]", "float32", "38.0", "38.0"], p.stdout


def test_xla_out_of_memory_is_one_line_and_summary_names_the_state(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """XLA's allocator failing (a JaxRuntimeError, not a MemoryError) gives exit 2 and one line; the final
    line calls the vessel scenario's responders what the scenario calls them ("hypoxic")."""

    def oom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 32016037104 bytes.")

    monkeypatch.setattr(jio, "run_scenario", oom)
    assert main(["run", "vessel", "--out", str(tmp_path / "o"), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ran out of memory" in err and "grid.shape" in err, err

    def done(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return {"fraction_responders_activated": 0.25, "steps": 3, "t_end_s": 15.0, "run_seconds": 0.1}

    monkeypatch.setattr(jio, "run_scenario", done)
    assert main(["run", "vessel", "--out", str(tmp_path / "o"), "--no-figures"]) == 0
    assert "25.0% of responders hypoxic" in capsys.readouterr().out


def test_resume_keeps_overrides_only_for_the_same_scenario_however_spelled(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The saved --set values belong to the scenario that ran: ./file and file are one scenario; another
    scenario named with --resume does not get them (it is refused as a different run)."""
    path = write_small(tmp_path)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    assert main(["run", path.name, "--out", str(out), "--set", "run.t_end=30", "--stop-after-chunks", "1"]) == 3
    capsys.readouterr()
    assert jio.saved_overrides(out, f"./{path.name}") == ["run.t_end=30"]
    assert jio.saved_overrides(out, "relay") is None
    assert main(["run", "relay", "--out", str(out), "--resume", "--no-figures"]) == 2
    assert "different scenario" in capsys.readouterr().err
    assert main(["run", f"./{path.name}", "--out", str(out), "--resume", "--no-figures"]) == 0
