"""Start-up of the command line: the persistent compilation cache (and its switch), lazy heavy imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from scenario_cases import write_small

from jaxcell.cli import CACHE_ENV, cache_dir


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    for off in ("0", "off", "OFF", "no", ""):
        monkeypatch.setenv(CACHE_ENV, off)
        assert cache_dir() is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "jaxcell" / "jax"


def _run(tmp_path: Path, out: str, **env: str) -> subprocess.CompletedProcess:
    path = write_small(tmp_path)
    full = {**os.environ, "PYTHONWARNINGS": "ignore", "HOME": str(tmp_path / "home"), **env}
    full.pop("XDG_CACHE_HOME", None)
    args = ["run", str(path), "--out", str(tmp_path / out), "--set", "run.t_end=10", "--set", "run.save_every=5",
            "--no-figures"]
    return subprocess.run([sys.executable, "-m", "jaxcell.cli", *args], capture_output=True, text=True, env=full,
                          timeout=300)


def test_run_fills_the_cache_it_is_given_and_none_when_off(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    p = _run(tmp_path, "a", JAXCELL_CACHE=str(cache))
    assert p.returncode == 0, p.stderr
    assert any(f.name.startswith("jit_run_steps") for f in cache.iterdir()), sorted(cache.iterdir())
    p = _run(tmp_path, "b", JAXCELL_CACHE="off")
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "home" / ".cache").exists()


def test_heavy_optional_packages_are_not_imported_by_jaxcell() -> None:
    code = ("import sys, jaxcell, jaxcell.cli, jaxcell.io, jaxcell.scenario, jaxcell.inference; "
            "print(sorted(m for m in ('matplotlib', 'zarr', 'xarray', 'optax') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
