"""The command line: exit codes, one-line errors on stderr, no output on bad input, list, info, fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from scenario_cases import BAD, SMALL, write_small

from jaxcell.cli import main

pytest.importorskip("xarray")
pytest.importorskip("zarr")
pytest.importorskip("matplotlib")


def test_run_writes_outputs_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path)
    out = tmp_path / "out"
    args = ["run", str(path), "--out", str(out), "--set", "run.t_end=5", "--set", "run.save_every=5", "--no-figures"]
    assert main(args) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "small: 1 steps to t = 5 s" in said and f"outputs in {out}" in said
    assert sorted(p.name for p in out.iterdir()) == ["fields.zarr", "summary.json"]


def test_stop_after_chunks_exits_3_and_says_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--stop-after-chunks", "0"]) == 3
    err = capsys.readouterr().err
    assert "--resume" in err
    assert not out.exists() and (tmp_path / "out.partial" / "state.npz").exists()
    assert main(["run", str(path), "--out", str(out), "--resume", "--set", "run.seed=4"]) == 2
    assert "different scenario" in capsys.readouterr().err


def test_list_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("paracrine_niche", "morphogen_gradient", "relay", "vessel"):
        assert name in listed
    assert main(["info"]) == 0
    info = capsys.readouterr().out
    for word in ("jaxcell", "jaxlib", "numpy", "optax", "devices", "default float"):
        assert word in info


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenario_one_line_no_output(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new, key, words = BAD[case]
    assert old in SMALL
    path = write_small(tmp_path, SMALL.replace(old, new, 1))
    out = tmp_path / "out"
    rc = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and key in err and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readers.csv", "small.toml"]


def test_bad_data_file_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_small(tmp_path, csv="x,y,z\n1,2,abc\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "readers.csv: line 2, column z" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_missing_file_and_bad_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "no such scenario file" in capsys.readouterr().err
    assert main(["run", "paracrine_nich", "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'paracrine_niche'" in capsys.readouterr().err
    assert main(["run", "--set", "run.dt=-1", "--out", str(tmp_path / "o")]) == 2
    assert "run.dt: must be > 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_refuses_to_replace_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(["run", str(write_small(tmp_path)), "--out", str(out)]) == 2
    assert "not a jaxcell output folder" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "precious"


def test_fit_subcommand_dispatch(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    calls = []
    fake = types.ModuleType("jaxcell.fit_cli")
    monkeypatch.setitem(sys.modules, "jaxcell.fit_cli", fake)
    assert main(["fit", str(tmp_path / "spec.toml")]) == 2
    assert "run_fit_cli is missing" in capsys.readouterr().err
    fake.run_fit_cli = lambda spec, out: calls.append((spec, out)) or 0
    assert main(["fit", "spec.toml", "--out", "d"]) == 0
    assert calls == [("spec.toml", "d")]


def test_entry_point_subprocess(tmp_path: Path) -> None:
    """The installed-style invocation: a bad file gives one line on stderr, no traceback."""
    path = write_small(tmp_path, SMALL.replace("count = 40", "count = -4"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "jaxcell.cli", "run", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "cells[1].count" in p.stderr and ">= 0" in p.stderr
    assert not (tmp_path / "o").exists()
