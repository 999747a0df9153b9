"""`jaxcell fit SPEC.toml --out DIR`: a steady profile fitted from a CSV, and bad specs."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxcell.cli import main

D_TRUE, K_TRUE, L, J = 0.1, 2.52e-4, 150.0, 1.0
LAM_TRUE = float(np.sqrt(D_TRUE / K_TRUE))  # 19.9 µm

SPEC = """\
title = "steady Dpp-like gradient"
[data]
csv = "profile.csv"
[model]
length = 150.0
spacing = 2.5
source_flux = 1.0
boundary_far = "noflux"
[fit]
init = {{ D = 0.05, k = 1e-4 }}
noise = "multiplicative"
{extra}
"""


def _write(tmp_path: Path, extra: str = "", csv: bool = True) -> str:
    if csv:
        x = np.linspace(5.0, 145.0, 29)
        lam = LAM_TRUE
        c = (J * lam / D_TRUE) * np.cosh((L - x) / lam) / np.sinh(L / lam)
        rng = np.random.default_rng(7)
        obs = c * np.exp(0.05 * rng.standard_normal(x.shape))
        lines = ["position,value"] + [f"{a:.10g},{b:.10g}" for a, b in zip(x, obs, strict=True)]
        (tmp_path / "profile.csv").write_text("\n".join(lines) + "\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(extra=extra))
    return str(spec)


def test_fit_cli_steady_profile(tmp_path, capsys):
    spec = _write(tmp_path)
    out = tmp_path / "result"
    assert main(["fit", spec, "--out", str(out)]) == 0
    res = json.loads((out / "fit.json").read_text())
    lam = np.sqrt(res["params"]["D"] / res["params"]["k"])
    assert abs(lam / 19.9 - 1) < 0.10, lam
    assert abs(res["lambda_um"] - lam) < 1e-9 * lam
    assert res["converged"] is True
    assert set(res) >= {"params", "stderr", "correlation", "warnings", "unidentified", "converged"}
    assert set(res["params"]) == {"D", "k"}
    for name in ("D", "k"):
        assert res["stderr"][name] is not None and 0 < res["stderr"][name] < 0.5
        prof = res["profile"][name]
        assert len(prof["values"]) == 9 and min(x for x in prof["loss"] if x is not None) >= res["loss"] - 1e-9
    for f in ("residuals.png", "profile_D.png", "profile_k.png"):
        assert (out / f).stat().st_size > 1000, f
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.csv", "result", "spec.toml"]  # no temp left
    assert "λ" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing_csv", "unknown_key"])
def test_fit_cli_bad_spec(tmp_path, capsys, case):
    if case == "missing_csv":
        spec, key = _write(tmp_path, csv=False), "data.csv"
    else:
        spec, key = _write(tmp_path, extra='noize = "additive"'), "fit.noize"
    out = tmp_path / "result"
    assert main(["fit", spec, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("jaxcell: error:") and spec in err and key in err, err
    assert "Traceback" not in err
    assert not out.exists()
    assert not any(p.name.endswith(".partial") or p.name == "result" for p in tmp_path.iterdir())


def test_fit_cli_explicit_time_course_stays_inside_its_bound(tmp_path, capsys):
    """solver = "explicit" needs a static bound on D (10 × init D). Data from D = 5 with init D = 0.1:
    the fit and its profile stay at or below the bound (no run-time error) and say so."""
    import jaxcell as jc

    grid = jc.Grid((20,), 5.0)
    m = jc.Model(grid, [jc.Substrate("signal", 5.0, 1e-3, boundary={"x-": jc.Flux(1.0)})])
    times = np.array([100.0, 200.0])
    _, tr = jc.simulate(m, m.init(), t_end=200.0, dt=10.0, save_at=times)
    xs = np.array([2.5, 22.5, 52.5, 92.5])
    rows = ["position,time,value"]
    for i, t in enumerate(times):
        rows += [f"{x},{t},{v}" for x, v in zip(xs, np.asarray(grid.sample(tr.fields[i, 0], xs[:, None])))]
    (tmp_path / "tc.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "spec.toml").write_text('[data]\ncsv = "tc.csv"\n[model]\nlength = 100.0\nspacing = 5.0\n'
                                        'source_flux = 1.0\nsolver = "explicit"\ndt = 10.0\n'
                                        '[fit]\ninit = { D = 0.1, k = 1e-3 }\n')
    out = tmp_path / "r"
    assert main(["fit", str(tmp_path / "spec.toml"), "--out", str(out)]) == 0
    res = json.loads((out / "fit.json").read_text())
    assert abs(res["params"]["D"] - 1.0) < 1e-6  # at the bound, not past it
    assert any("explicit solver's bound" in w for w in res["warnings"])
    assert max(res["profile"]["D"]["values"]) <= 1.0 + 1e-9
    assert "explicit solver's bound" in capsys.readouterr().out


@pytest.mark.parametrize("example", ["dpp_steady", "dpp_time_course"])
def test_shipped_examples_run_as_shipped(tmp_path, example):
    """examples/<name>/spec.toml with its CSV, unchanged: D and k of the Dpp-like data (D = 0.10 µm²/s,
    k = 2.52e-4 /s, 5 % noise; the steady one has two missing points) come back within 5 %."""
    spec = Path(__file__).resolve().parent.parent / "examples" / example / "spec.toml"
    out = tmp_path / "fit"
    assert main(["fit", str(spec), "--out", str(out)]) == 0
    res = json.loads((out / "fit.json").read_text())
    assert res["converged"] is True
    assert res["params"]["D"] == pytest.approx(D_TRUE, rel=0.05)
    assert res["params"]["k"] == pytest.approx(K_TRUE, rel=0.05)


def test_several_csvs_fit_jointly_with_profile_intervals(tmp_path):
    """examples/dpp_two_discs: two [[data]] CSVs (exact formation profiles of D = 0.10 µm²/s, k = 2.52e-4 /s,
    gains 2 and 0.5, backgrounds 5 and 1, 3 % and 5 % noise, a gap in disc2) in one joint fit: the truth
    lies inside each 95 % profile interval, each disc's gain comes back within 15 %, figures per disc."""
    spec = Path(__file__).resolve().parent.parent / "examples" / "dpp_two_discs" / "spec.toml"
    out = tmp_path / "fit"
    assert main(["fit", str(spec), "--out", str(out)]) == 0
    res = json.loads((out / "fit.json").read_text())
    assert res["converged"] is True
    for name, truth in (("D", D_TRUE), ("k", K_TRUE)):
        lo, hi = res["ci95"][name]
        assert lo < truth < hi and hi / lo < 1.6, (name, lo, hi)
        assert lo < res["params"][name] < hi
    assert res["sets"]["disc1"]["scale"] == pytest.approx(2.0, rel=0.15)
    assert res["sets"]["disc2"]["scale"] == pytest.approx(0.5, rel=0.15)
    assert {p.name for p in out.iterdir()} >= {"fit.json", "residuals_disc1.png", "residuals_disc2.png",
                                                "profile_D.png", "profile_k.png"}


def test_several_csvs_bad_input(tmp_path, capsys):
    """Two data sets with one name, or one a time course and one not: one line naming the table."""
    (tmp_path / "a.csv").write_text("position,value\n1,2\n2,1\n3,0.5\n")
    (tmp_path / "b.csv").write_text("position,time,value\n1,10,2\n2,10,1\n")
    base = "[model]\nlength = 10.0\nspacing = 1.0\ndt = 1.0\n[fit]\ninit = { D = 1.0, k = 0.1 }\n"
    spec = tmp_path / "s.toml"
    spec.write_text('[[data]]\nname = "x"\ncsv = "a.csv"\n[[data]]\nname = "x"\ncsv = "a.csv"\n' + base)
    assert main(["fit", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "data[1].name: must be a new, non-empty name" in capsys.readouterr().err
    spec.write_text('[[data]]\ncsv = "a.csv"\n[[data]]\ncsv = "b.csv"\n' + base)
    assert main(["fit", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "data[1].csv: has a time column" in capsys.readouterr().err
