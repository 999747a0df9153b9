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


def test_runs_of_cells_in_voxel_order_are_cached(tmp_path: Path) -> None:
    """Cells worked on in voxel order (from SORT_MIN cells; lowered to 1 here) are ordered before the
    compiled call, so the program has no host callback and is written to the persistent cache."""
    cache = tmp_path / "cache"
    code = ("import importlib, jax, jaxcell as jc, jaxcell.cli as cli; "
            "s = importlib.import_module('jaxcell.simulate'); cli._enable_compilation_cache(); "
            "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0); s.SORT_MIN = 1; "
            "g = jc.Grid((6, 5, 4), 10.0); m = jc.Model(g, [jc.Substrate('s', 10.0)]); "
            "c = jc.Cells([[5.0, 5.0, 5.0], [35.0, 25.0, 15.0]], secretion=1.0, "
            "receptors=jc.Receptors(total=10.0, kon=0.1)); "
            "st, _ = jc.simulate(m, m.init(c), t_end=2.0, dt=1.0); print(s.sorts_cells(m, st.cells, None))")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "JAXCELL_CACHE": str(cache)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "True"  # the run did work on its cells in voxel order
    assert any(f.name.startswith("jit_run_steps") for f in cache.iterdir()), sorted(cache.iterdir())
