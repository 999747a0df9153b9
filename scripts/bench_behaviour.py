"""Cells that live: steps/s with chemotaxis and division inside the compiled loop.

For each cell count on a 2D grid (default 128², explicit solver, float32) it times
one ``jc.simulate`` call of ``--steps`` steps with

* ``none``     — cells fixed (exchange deposited once per call);
* ``identity`` — a behaviour that changes nothing: coupling, exchange and the
  cells' field samples and gradients are recomputed every step;
* ``rules``    — :func:`jaxcell.rules` with chemotaxis, random motility, a
  secretion rule, division and death;

and the same ``rules`` update done the old way: a Python loop of one-step
``jc.simulate`` calls with the (jitted) rule applied between them. It prints
steps/s, the per-step cost of the exchange stage (identity − none) and of the
behaviour stage (rules − identity), both per cell, and the in-loop speed-up
over the Python loop.

Usage::

    python scripts/bench_behaviour.py [--cells 1e4,1e5,1e6] [--n 128] [--steps 50]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from bench_transport import best_time  # one timing rule for every benchmark

import jaxcell as jc
from jaxcell._node import replace
from jaxcell.cells import coupling_weights, gather
from jaxcell.step import Env, field_gradient

SPACING, DT = 10.0, 1.0  # µm, s


def make(n: int, n_cells: int) -> tuple[jc.Model, jc.State, jc.Rules]:
    grid = jc.Grid((n, n), SPACING)
    model = jc.Model(grid, jc.Substrate("s", 100.0, 1e-3), solver="explicit")
    rng = np.random.default_rng(0)
    pos = (rng.random((n_cells, 2)) * np.asarray(grid.extent)).astype(np.float32)
    cells = jc.Cells(pos, secretion=1.0, uptake=1.0, alive=np.arange(n_cells) < n_cells // 2)
    field = jnp.ones((1, n, n), jnp.float32)
    rules = jc.rules([jc.Rule("s", "concentration", "chemotaxis:s", "up", max=0.05, K=1.0),
                      jc.Rule("s", "concentration", "division", "up", max=1e-4, K=2.0, n=2.0),
                      jc.Rule("s", "concentration", "secretion:s", "down", max=0.0, K=5.0)],
                     base={"speed": 0.02, "death": 1e-5})
    return model, model.init(cells, fields=field), rules


def time_call(model: jc.Model, state: jc.State, steps: int, behaviour, repeat: int) -> float:
    def run() -> None:
        new, _ = jc.simulate(model, state, steps * DT, DT, behaviour=behaviour)
        new.fields.block_until_ready()

    run()
    return best_time(run, repeat)


def time_python_loop(model: jc.Model, state: jc.State, steps: int, rules: jc.Rules) -> float:
    """The same update between one-step calls: the rule is jitted, the loop is Python."""
    grid = model.grid
    cells0 = rules.prepare(state.cells, model)

    @jax.jit
    def update(cells, fields, n):
        idx, w = coupling_weights(grid, cells.position, cells.alive, model.coupling)
        grad = field_gradient(fields, grid.spacing).reshape((2,) + grid.shape)
        env = Env(concentration=gather(grid, idx, w, fields),
                  gradient=gather(grid, idx, w, grad).reshape(-1, 1, 2),
                  key=jax.random.fold_in(jax.random.key(0), n), dt=jnp.asarray(DT, fields.dtype), names=model.names)
        new = rules(cells, env, 0.0)
        lo = jnp.zeros(2, new.position.dtype)
        return replace(new, position=jnp.clip(new.position, lo, lo + jnp.asarray(grid.extent, new.position.dtype)))

    def run() -> None:
        s = replace(state, cells=cells0)
        for k in range(steps):
            s, _ = jc.simulate(model, s, (k + 1) * DT, DT)
            s = replace(s, cells=update(s.cells, s.fields, k))
        s.fields.block_until_ready()

    run()
    return best_time(run, 1)


def run(cells: tuple[int, ...] = (10_000, 100_000, 1_000_000), n: int = 128, steps: int = 50,
        repeat: int = 2, loop_steps: int = 20) -> list[dict]:
    print(f"grid {n}², explicit, float32, {steps} steps per call; half the slots alive at the start")
    print(f"{'cells':>8} {'none st/s':>10} {'ident st/s':>10} {'rules st/s':>10} {'exch ns/c':>10} "
          f"{'behav ns/c':>10} {'loop st/s':>10} {'speed-up':>8}")
    rows = []
    for n_cells in cells:
        model, state, rules = make(n, n_cells)
        t_none = time_call(model, state, steps, None, repeat)
        t_id = time_call(model, state, steps, lambda c, e, t: c, repeat)
        t_rules = time_call(model, state, steps, rules, repeat)
        t_loop = time_python_loop(model, state, loop_steps, rules) / loop_steps
        row = {"cells": n_cells, "none": steps / t_none, "identity": steps / t_id, "rules": steps / t_rules,
               "exchange_ns_per_cell": 1e9 * (t_id - t_none) / steps / n_cells,
               "behaviour_ns_per_cell": 1e9 * (t_rules - t_id) / steps / n_cells,
               "loop": 1 / t_loop, "speedup": t_loop / (t_rules / steps)}
        rows.append(row)
        print(f"{n_cells:>8.0e} {row['none']:>10.1f} {row['identity']:>10.1f} {row['rules']:>10.1f} "
              f"{row['exchange_ns_per_cell']:>10.1f} {row['behaviour_ns_per_cell']:>10.1f} {row['loop']:>10.1f} "
              f"{row['speedup']:>7.1f}x", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", default="1e4,1e5,1e6", help="comma-separated cell slot counts")
    p.add_argument("--n", type=int, default=128, help="square grid edge (voxels)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    run(tuple(int(float(c)) for c in a.cells.split(",")), a.n, a.steps, a.repeat)


if __name__ == "__main__":
    main()
