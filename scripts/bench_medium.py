"""The tissue medium's cost: per-step time with diffusion/decay maps, flow and a matrix, against the plain step.

Each case runs ``jc.simulate`` on an n³ grid (float32) for every solver that
handles it and prints ms per step, voxel-updates/s and the ratio to the plain
step (one D, one k, no flow, no matrix) of the same solver; the issue's target
is a ratio of at most 2 ("all" adds production and flow to maps and a matrix).
D = 1000 µm²/s (a map between 500 and 1500), spacing
10 µm, dt = 0.01 s (one explicit sub-step), flow 50 µm/s along x (Courant 0.05).

Usage::

    python scripts/bench_medium.py [--sizes 64,100] [--steps 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transport import best_time  # noqa: E402

import jaxcell as jc  # noqa: E402

D, K, SPACING, DT, SPEED = 1000.0, 0.01, 10.0, 0.01, 50.0
FACES = {"x-": jc.Dirichlet(0.0), "x+": jc.Robin(0.0)}


def substrate(case: str, shape: tuple[int, ...]) -> jc.Substrate:
    rng = np.random.default_rng(0)
    if case == "plain":
        return jc.Substrate("s", D, K, boundary=FACES)
    if case == "maps":
        return jc.Substrate("s", rng.uniform(0.5, 1.5, shape).astype(np.float32) * D,
                            rng.uniform(0.5, 1.5, shape).astype(np.float32) * K, boundary=FACES)
    if case == "flow":
        return jc.Substrate("s", D, K, boundary=FACES, velocity=(SPEED, 0.0, 0.0))
    if case == "matrix":
        return jc.Substrate("s", D, K, boundary=FACES, matrix=jc.Matrix(1.0, 0.1, 0.01, 0.001))
    if case == "maps+matrix":
        return jc.Substrate("s", rng.uniform(0.5, 1.5, shape).astype(np.float32) * D,
                            rng.uniform(0.5, 1.5, shape).astype(np.float32) * K, boundary=FACES,
                            matrix=jc.Matrix(1.0, 0.1, 0.01, 0.001))
    if case == "all":
        return jc.Substrate("s", rng.uniform(0.5, 1.5, shape).astype(np.float32) * D, K, boundary=FACES,
                            production=1e-3, velocity=(SPEED, 0.0, 0.0), matrix=jc.Matrix(1.0, 0.1, 0.01, 0.001))
    raise ValueError(case)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,100")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--solvers", default="implicit,explicit,lod")
    args = ap.parse_args()
    cases = ("plain", "maps", "flow", "matrix", "maps+matrix", "all")
    print(f"{'solver':9s} {'n':>4s} {'case':11s} {'ms/step':>9s} {'vox-upd/s':>10s} {'÷ plain':>8s}")
    for solver in args.solvers.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            shape = (n, n, n)
            grid = jc.Grid(shape, SPACING)
            plain = None
            for case in cases:
                model = jc.Model(grid, substrate(case, shape), solver=solver)
                state = model.init(fields=jnp.ones((1,) + shape, jnp.float32))
                t_end = args.steps * DT

                def run(model: jc.Model = model, state: jc.State = state, t_end: float = t_end) -> None:
                    jc.simulate(model, state, t_end, DT)[0].fields.block_until_ready()

                run()
                per = best_time(run, args.repeat) / args.steps
                plain = per if case == "plain" else plain
                print(f"{solver:9s} {n:4d} {case:11s} {per * 1e3:9.3f} {n**3 / per:10.3g} {per / plain:8.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
