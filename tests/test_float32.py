"""What float32 runs promise (the library's default precision), each in a fresh float32 process.

The rest of the suite runs in float64 (conftest.py); these checks run a small
script with x64 off and read back its numbers.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np


def run32(code: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> dict:
    """Run ``code`` in a float32 Python process; it must print one JSON line, returned as a dict."""
    full = "import json, numpy as np, jax, jaxcell as jc\nassert jax.numpy.result_type(float) == jax.numpy.float32\n"
    full += textwrap.dedent(code)
    e = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "XLA_FLAGS")}
    e.update(env or {})
    out = subprocess.run([*prefix, sys.executable, "-c", full], capture_output=True, text=True, env=e, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_budget_stays_at_round_off_over_1e5_float32_steps():
    """q·t secreted exactly (compensated sums); before, both totals drifted by 5.7e-4 and 7.4e-4."""
    res = run32("""
        g = jc.Grid((16,), 10.0)
        out = {}
        for solver in ("explicit", "implicit"):
            m = jc.Model(g, [jc.Substrate("s", 20.0, 1e-3, boundary={"x+": jc.Dirichlet(0.0)})], solver=solver)
            s, _ = jc.simulate(m, m.init(jc.Cells([[35.0]], secretion=0.37)), t_end=1e5, dt=1.0)
            b = jc.budget(s)
            out[solver] = [float(b["secreted"][0]), float(b["residual"][0])]
        print(json.dumps(out))
    """)
    for secreted, residual in res.values():
        assert abs(secreted / 0.37e5 - 1) < 1e-6
        # what remains is the fields' own float32 rounding, a random walk of ~√steps·eps
        assert abs(residual) < 1e-4 * secreted


def test_spectral_float32_large_steps_stay_non_negative():
    """D·dt/h² = 3.6e4 and 1e6 with a point source: before, minima −1.65 and −18.4 (φ1 from 1 + z·φ2 cancelled)."""
    res = run32("""
        out = {}
        for r in (3.6e4, 1e6):
            g = jc.Grid((24, 24, 24), 10.0)
            m = jc.Model(g, [jc.Substrate("s", 100.0, 1e-4)], solver="spectral")
            s, _ = jc.simulate(m, m.init(jc.Cells([[125.0, 125.0, 125.0]], secretion=10.0)), t_end=3 * r, dt=r)
            f = np.asarray(s.fields)
            b = jc.budget(s)
            out[str(r)] = [float(f.min()), float(f.max()), float(b["residual"][0] / b["secreted"][0])]
        print(json.dumps(out))
    """)
    for low, high, resid in res.values():
        assert low >= 0.0 and high > 0
        assert abs(resid) < 1e-5


def test_voxel_of_a_float32_position_next_to_a_face_matches_float64():
    """x = 559.99996635 with origin −1000 and 20 µm voxels is in voxel 77; (x − origin) rounds to 1560 in float32."""
    res = run32("""
        g = jc.Grid((100,), 20.0, origin=-1000.0)
        x = np.array([[559.99996635], [560.0], [-1000.0], [999.99]], np.float64)
        print(json.dumps({"f32": np.asarray(g.voxel_index(jax.numpy.asarray(x, jax.numpy.float32))).tolist(),
                          "f64": np.floor((x[:, 0] + 1000.0) / 20.0).astype(int).clip(0, 99).tolist()}))
    """)
    assert res["f32"] == res["f64"] == [77, 78, 0, 99]


def test_same_numbers_on_one_and_two_cores():
    """Promise (README): implicit, lod and explicit runs are bitwise identical whatever the core count;
    spectral agrees to float32 round-off (its matrix products split differently over threads)."""
    code = """
        g = jc.Grid((24, 24, 24), 10.0)
        rng = np.random.default_rng(0)
        cells = jc.Cells(rng.uniform(0, 240, (200, 3)), secretion=1.0, uptake=5.0,
                         receptors=jc.Receptors(total=1e3, kon=1e-2, koff=1e-3, kint=1e-3))
        out = {}
        for solver in jc.solvers.names():
            m = jc.Model(g, [jc.Substrate("s", 50.0, 1e-3, boundary={"x-": jc.Flux(0.1)})], solver=solver)
            s, _ = jc.simulate(m, m.init(cells), t_end=40.0, dt=2.0)
            out[solver] = np.asarray(s.fields).ravel().tolist()
        print(json.dumps(out))
    """
    one = run32(code, prefix=("taskset", "-c", "0"))
    two = run32(code)
    for solver in one:
        a, b = np.asarray(one[solver]), np.asarray(two[solver])
        if solver == "spectral":
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())
        else:
            np.testing.assert_array_equal(a, b)
