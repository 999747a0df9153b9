"""Cell coupling throughput: cell-updates/s on a 128³ grid, over the cost of a cell-free step.

Modes (secretion + uptake in all of them):

* ``fixed``     — no responses: ``simulate`` deposits the exchange once per call,
  so the per-step cost of cells is only the per-voxel exchange terms;
* ``response``  — a Hill response of uptake to the local concentration: every
  step gathers the field at the cells and deposits three exchange fields;
* ``receptors`` — ligand-receptor binding every step (two deposits, one gather);
* ``rules``     — living cells: :func:`jaxcell.rules` inside the compiled loop
  (secretion up-regulated by the signal, chemotaxis up its gradient, random
  motility, division and death), so coupling, exchange, the cells' field
  samples and gradients are recomputed every step.

``cell-updates/s = N · steps / (t_cells − t_cell_free)``. Each per-step mode is
also run with the cells sorted by voxel index (one ``jnp.argsort``), and the
bare scatter (:func:`jaxcell.cells.deposit`) and gather are timed on random
versus sorted indices.

Usage::

    python scripts/bench_cells.py [--cells 1e4,1e5,1e6] [--n 128] [--steps 5] [--modes fixed,response]
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from bench_transport import best_time  # one timing rule for every benchmark

import jaxcell as jc

D, DECAY, SPACING, DT = 1000.0, 0.01, 10.0, 0.01  # µm²/s, 1/s, µm, s (explicit: one sub-step)
MODES = ("fixed", "response", "receptors", "rules")
COUPLINGS = ("nearest", "linear")


def make_model(n: int, coupling: str, mode: str, solver: str) -> jc.Model:
    grid = jc.Grid((n, n, n), SPACING)
    responses = ()
    if mode == "response":
        responses = (jc.Response("s", "s", max=20.0, K=1.0, basal=5.0, parameter="uptake", kind="concentration"),)
    return jc.Model(grid, jc.Substrate("s", D, DECAY), solver=solver, coupling=coupling, responses=responses)


def make_behaviour(mode: str) -> jc.Rules | None:
    """The living-cells rule set of mode ``"rules"`` (None for the other modes)."""
    if mode != "rules":
        return None
    return jc.rules([jc.Rule("s", "concentration", "secretion:s", "up", max=5.0, K=1.0, n=2.0),
                     jc.Rule("s", "concentration", "chemotaxis:s", "up", max=0.05, K=1.0, n=1.0),
                     jc.Rule("s", "concentration", "division", "up", max=1e-3, K=2.0, n=2.0)],
                    base={"speed": 0.02, "death": 1e-4})


def positions(grid: jc.Grid, n_cells: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n_cells, grid.ndim)) * np.asarray(grid.extent)).astype(np.float32)


def make_cells(pos: Any, mode: str) -> jc.Cells:
    rec = jc.Receptors(total=1e4, kon=1e-3, koff=0.1, kint=0.01) if mode == "receptors" else None
    return jc.Cells(pos, secretion=1.0, uptake=10.0, receptors=rec)


def sort_by_voxel(grid: jc.Grid, pos: Any) -> jax.Array:
    """Positions reordered by flat voxel index (one argsort)."""
    pos = jnp.asarray(pos)
    return pos[jnp.argsort(grid.voxel_index(pos))]


def time_run(model: jc.Model, cells: jc.Cells | None, steps: int, repeat: int,
             behaviour: jc.Rules | None = None) -> float:
    state = model.init(cells=cells, fields=jnp.ones((1,) + model.grid.shape, jnp.float32))

    def run() -> None:
        new, _ = jc.simulate(model, state, steps * DT, DT, behaviour=behaviour)
        new.fields.block_until_ready()

    run()
    return best_time(run, repeat)


def time_scatter_gather(grid: jc.Grid, pos: Any, coupling: str, repeat: int) -> dict[str, float]:
    """Seconds per deposit and per gather of one (N, 1) array, random vs sorted cell order."""
    from jaxcell.cells import coupling_weights, deposit, gather

    out = {}
    fields = jnp.ones((1,) + grid.shape, jnp.float32)
    dep = jax.jit(lambda i, w, v: deposit(grid, i, w, v))
    gat = jax.jit(lambda i, w, f: gather(grid, i, w, f))
    for order, p in (("random", jnp.asarray(pos)), ("sorted", sort_by_voxel(grid, pos))):
        idx, w = coupling_weights(grid, p, jnp.ones(p.shape[0], bool), coupling)
        vals = jnp.ones((p.shape[0], 1), jnp.float32)
        dep(idx, w, vals).block_until_ready()
        gat(idx, w, fields).block_until_ready()
        out[f"deposit_{order}"] = best_time(lambda i=idx, w=w, v=vals: dep(i, w, v).block_until_ready(), repeat)
        out[f"gather_{order}"] = best_time(lambda i=idx, w=w: gat(i, w, fields).block_until_ready(), repeat)
    return out


def run(cells: tuple[int, ...] = (10_000, 100_000, 1_000_000), n: int = 128, steps: int = 5,
        modes: tuple[str, ...] = MODES, couplings: tuple[str, ...] = COUPLINGS, solver: str = "explicit",
        repeat: int = 2, sort: bool = True) -> list[dict[str, Any]]:
    """Print the cell throughput table; returns one dict per case."""
    grid = jc.Grid((n, n, n), SPACING)
    base = time_run(make_model(n, "nearest", "fixed", solver), None, steps, repeat)
    print(f"grid {n}³, solver {solver!r}, float32, {steps} steps per call; cell-free step "
          f"{1e3 * base / steps:.2f} ms ({steps * n**3 / base:.3g} voxel-updates/s)")
    print(f"{'mode':9} {'coupling':8} {'cells':>8} {'step ms':>8} {'cells ms':>8} {'cell-upd/s':>10} "
          f"{'sorted ms':>9} {'sorted c/s':>10} {'speedup':>7}")
    rows = []
    for mode in modes:
        for coupling in couplings:
            model = make_model(n, coupling, mode, solver)
            for n_cells in cells:
                pos = positions(grid, n_cells)
                t = time_run(model, make_cells(pos, mode), steps, repeat, make_behaviour(mode))
                extra = max(t - base, 1e-9)
                row = {"mode": mode, "coupling": coupling, "cells": n_cells, "step_s": t / steps,
                       "cell_s": extra / steps, "rate": n_cells * steps / extra}
                line = (f"{mode:9} {coupling:8} {n_cells:>8.0e} {1e3 * t / steps:>8.2f} {1e3 * extra / steps:>8.2f} "
                        f"{row['rate']:>10.3g}")
                if sort and mode not in ("fixed", "rules"):  # a behaviour sees cells in the user's order
                    ts = time_run(model, make_cells(sort_by_voxel(grid, pos), mode), steps, repeat)
                    extra_s = max(ts - base, 1e-9)
                    row.update(sorted_cell_s=extra_s / steps, sorted_rate=n_cells * steps / extra_s)
                    line += f" {1e3 * extra_s / steps:>9.2f} {row['sorted_rate']:>10.3g} {extra / extra_s:>6.2f}x"
                rows.append(row)
                print(line, flush=True)
    if sort:
        print("bare scatter-add (deposit) / gather of one (N, 1) array, ms: random order -> sorted by voxel")
        for coupling in couplings:
            for n_cells in cells:
                sg = time_scatter_gather(grid, positions(grid, n_cells), coupling, repeat + 1)
                rows.append({"mode": "scatter/gather", "coupling": coupling, "cells": n_cells, **sg})
                print(f"  {coupling:8} {n_cells:>8.0e}  deposit {1e3 * sg['deposit_random']:8.2f} -> "
                      f"{1e3 * sg['deposit_sorted']:8.2f} ({sg['deposit_random'] / sg['deposit_sorted']:.2f}x)   "
                      f"gather {1e3 * sg['gather_random']:8.2f} -> {1e3 * sg['gather_sorted']:8.2f} "
                      f"({sg['gather_random'] / sg['gather_sorted']:.2f}x)", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", default="1e4,1e5,1e6", help="comma-separated cell counts")
    p.add_argument("--n", type=int, default=128, help="cube edge (voxels)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--couplings", default=",".join(COUPLINGS))
    p.add_argument("--solver", default="explicit", help="transport solver under the cells")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--no-sort", action="store_true", help="skip the sorted-by-voxel runs")
    a = p.parse_args()
    run(tuple(int(float(c)) for c in a.cells.split(",")), a.n, a.steps, tuple(a.modes.split(",")),
        tuple(a.couplings.split(",")), a.solver, a.repeat, not a.no_sort)


if __name__ == "__main__":
    main()
