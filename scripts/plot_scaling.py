"""Cost per step against grid size, cell count and device count; tables to stdout, figure to a PNG.

Three measurements, float32, each the best of ``--repeat`` timed ``jc.simulate`` calls
after one warm-up (compile) call:

* grid:    n³ grids (default 32..128) for implicit / lod / explicit / spectral, no cells;
* cells:   1e3..1e6 cells with receptors (secretion + uptake + binding every step) on a
           64³ grid, explicit transport, nearest coupling;
* devices: 1, 2, 4 forced CPU devices (``--xla_force_host_platform_device_count=4``, in a
           subprocess) with :func:`jaxcell.shard`, implicit and explicit on 64³ and 128³.

Usage::

    python scripts/plot_scaling.py [--out docs/scaling.png] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

D, DECAY, SPACING, DT = 1000.0, 0.01, 10.0, 0.01  # as in bench_transport: explicit needs one sub-step


def time_steps(model: Any, state: Any, steps: int, repeat: int) -> float:
    """Seconds per step (best of ``repeat``) of ``jc.simulate`` over ``steps`` steps."""
    import jaxcell as jc

    def run() -> None:
        new, _ = jc.simulate(model, state, steps * DT, DT)
        new.fields.block_until_ready()

    run()
    from bench_transport import best_time  # imported late: it imports jax, and XLA_FLAGS must come first

    return best_time(run, repeat) / steps


def grid_scaling(sizes: list[int], solvers: list[str], steps: int, repeat: int) -> list[dict]:
    import jax.numpy as jnp

    import jaxcell as jc

    rows = []
    for solver in solvers:
        for n in sizes:
            model = jc.Model(jc.Grid((n, n, n), SPACING), jc.Substrate("s", D, DECAY), solver=solver)
            state = model.init(fields=jnp.ones((1, n, n, n), jnp.float32))
            t = time_steps(model, state, steps, repeat)
            rows.append({"solver": solver, "n": n, "voxels": n**3, "step_s": t, "rate": n**3 / t})
            print(f"  grid {solver:9s} {n:4d}³ {1e3 * t:9.3f} ms/step", flush=True)
    return rows


def cell_scaling(counts: list[int], n: int, steps: int, repeat: int) -> list[dict]:
    import jax.numpy as jnp
    import numpy as np

    import jaxcell as jc

    grid = jc.Grid((n, n, n), SPACING)
    model = jc.Model(grid, jc.Substrate("s", D, DECAY), solver="explicit", coupling="nearest")
    base = time_steps(model, model.init(fields=jnp.ones((1, n, n, n), jnp.float32)), steps, repeat)
    rows = [{"cells": 0, "step_s": base, "cell_s": 0.0}]
    print(f"  cells {0:>9d} {1e3 * base:9.3f} ms/step", flush=True)
    rng = np.random.default_rng(0)
    for k in counts:
        pos = (rng.random((k, 3)) * n * SPACING).astype(np.float32)
        cells = jc.Cells(pos, secretion=1.0, uptake=10.0,
                         receptors=jc.Receptors(total=1e4, kon=1e-3, koff=0.1, kint=0.01))
        state = model.init(cells=cells, fields=jnp.ones((1, n, n, n), jnp.float32))
        t = time_steps(model, state, steps, repeat)
        rows.append({"cells": k, "step_s": t, "cell_s": max(t - base, 0.0), "rate": k / max(t - base, 1e-12)})
        print(f"  cells {k:>9d} {1e3 * t:9.3f} ms/step", flush=True)
    return rows


def device_worker(sizes: list[int], solvers: list[str], devices: list[int], steps: int, repeat: int) -> None:
    """Runs in the subprocess (XLA_FLAGS set before jax is imported); prints one JSON line."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    import jaxcell as jc

    rows = []
    for solver in solvers:
        for n in sizes:
            model = jc.Model(jc.Grid((n, n, n), SPACING), jc.Substrate("s", D, DECAY), solver=solver)
            for k in devices:
                state = model.init(fields=jnp.ones((1, n, n, n), jnp.float32))
                if k > 1:
                    state = jc.shard(state, Mesh(np.asarray(jax.devices()[:k]), ("x",)))
                t = time_steps(model, state, steps, repeat)
                rows.append({"solver": solver, "n": n, "devices": k, "step_s": t})
                print(f"  devices {solver:9s} {n:4d}³ x{k} {1e3 * t:9.3f} ms/step", file=sys.stderr, flush=True)
    print("JSON" + json.dumps(rows), flush=True)


def device_scaling(sizes: list[int], solvers: list[str], devices: list[int], steps: int, repeat: int) -> list[dict]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(devices)} " + env.get("XLA_FLAGS", "")
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, __file__, "--_worker", json.dumps([sizes, solvers, devices, steps, repeat])]
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    line = next(s for s in out.splitlines() if s.startswith("JSON"))
    return json.loads(line[4:])


def tables(res: dict) -> str:
    """Markdown tables of the three measurements."""
    out = ["**Grid size** (no cells; ms per step, and voxel-updates/s)", "",
           "| solver | " + " | ".join(f"{n}³" for n in sorted({r['n'] for r in res['grid']})) + " |",
           "|---|" + "---|" * len({r['n'] for r in res['grid']})]
    for solver in dict.fromkeys(r["solver"] for r in res["grid"]):
        rs = [r for r in res["grid"] if r["solver"] == solver]
        out.append(f"| {solver} | " + " | ".join(f"{1e3 * r['step_s']:.3g} ms ({r['rate']:.2g}/s)" for r in rs) + " |")
    out += ["", f"**Cell count** (explicit, {res['cell_grid']}³ grid, receptors + secretion + uptake, nearest)", "",
            "| cells | ms/step | cell cost ms/step | cell-updates/s |", "|---:|---:|---:|---:|"]
    for r in res["cells"]:
        rate = f"{r['rate']:.3g}" if r.get("rate") else "-"
        count = f"{r['cells']:.0e}" if r["cells"] else "0 (cell-free)"
        out.append(f"| {count} | {1e3 * r['step_s']:.3g} | {1e3 * r['cell_s']:.3g} | {rate} |")
    out += ["", "**Devices** (forced CPU devices sharing the same cores; ms per step)", "",
            "| solver | n | " + " | ".join(f"{k} dev" for k in sorted({r['devices'] for r in res['devices']})) + " |",
            "|---|---:|" + "---:|" * len({r['devices'] for r in res["devices"]})]
    for key in dict.fromkeys((r["solver"], r["n"]) for r in res["devices"]):
        rs = [r for r in res["devices"] if (r["solver"], r["n"]) == key]
        out.append(f"| {key[0]} | {key[1]}³ | " + " | ".join(f"{1e3 * r['step_s']:.3g}" for r in rs) + " |")
    return "\n".join(out)


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    for solver in dict.fromkeys(r["solver"] for r in res["grid"]):
        rs = [r for r in res["grid"] if r["solver"] == solver]
        ax[0].loglog([r["voxels"] for r in rs], [1e3 * r["step_s"] for r in rs], "o-", label=solver)
    v = [r["voxels"] for r in res["grid"]]
    lo, hi = min(v), max(v)
    ref = min(1e3 * r["step_s"] for r in res["grid"] if r["voxels"] == lo)
    ax[0].loglog([lo, hi], [ref, ref * hi / lo], "k:", label="∝ voxels")
    ax[0].set(xlabel="voxels (n³)", ylabel="ms per step", title="grid size (no cells)")
    ax[0].legend()
    rs = [r for r in res["cells"] if r["cells"] > 0]
    ax[1].loglog([r["cells"] for r in rs], [1e3 * r["step_s"] for r in rs], "o-", label="total step")
    ax[1].loglog([r["cells"] for r in rs], [1e3 * max(r["cell_s"], 1e-4) for r in rs], "s--", label="cell part")
    ax[1].axhline(1e3 * res["cells"][0]["step_s"], color="gray", ls=":", label="cell-free step")
    c0, c1 = rs[0]["cells"], rs[-1]["cells"]
    ax[1].loglog([c0, c1], [1e3 * rs[-1]["cell_s"] * c0 / c1, 1e3 * rs[-1]["cell_s"]], "k:", label="∝ cells")
    ax[1].set(xlabel="cells (with receptors)", ylabel="ms per step",
              title=f"cell count ({res['cell_grid']}³ grid, explicit)")
    ax[1].legend()
    for key in dict.fromkeys((r["solver"], r["n"]) for r in res["devices"]):
        rs = [r for r in res["devices"] if (r["solver"], r["n"]) == key]
        ax[2].loglog([r["devices"] for r in rs], [1e3 * r["step_s"] for r in rs], "o-", label=f"{key[0]} {key[1]}³")
    ks = sorted({r["devices"] for r in res["devices"]})
    ax[2].set_xticks(ks, [str(k) for k in ks])
    ax[2].minorticks_off()
    ax[2].set(xlabel="forced CPU devices (same 2 cores)", ylabel="ms per step", title="devices (jc.shard)")
    ax[2].legend()
    fig.suptitle(res["machine"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/scaling.png")
    p.add_argument("--sizes", default="32,48,64,96,128")
    p.add_argument("--solvers", default="implicit,lod,explicit,spectral")
    p.add_argument("--cells", default="1e3,1e4,1e5,1e6")
    p.add_argument("--cell-grid", type=int, default=64)
    p.add_argument("--device-sizes", default="64,128")
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._worker:
        device_worker(*json.loads(a._worker))
        return
    if a.quick:
        a.sizes, a.cells, a.cell_grid, a.device_sizes, a.steps, a.repeat = "16,24", "1e2,1e3", 16, "16", 2, 1
    import platform

    import jax

    t0 = time.perf_counter()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    res: dict[str, Any] = {"machine": f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__} "
                                      f"{jax.devices()[0].platform}, float32",
                           "cell_grid": a.cell_grid}
    print(res["machine"], flush=True)
    res["grid"] = grid_scaling([int(s) for s in a.sizes.split(",")], a.solvers.split(","), a.steps, a.repeat)
    res["cells"] = cell_scaling([int(float(c)) for c in a.cells.split(",")], a.cell_grid, a.steps, a.repeat)
    res["devices"] = device_scaling([int(s) for s in a.device_sizes.split(",")], ["implicit", "explicit"],
                                    [int(k) for k in a.devices.split(",")], a.steps, a.repeat)
    print()
    print(tables(res))
    print()
    plot(res, a.out)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
