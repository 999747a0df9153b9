"""Before/after: the same per-step timings for two source trees, alternated, best of many.

Each tree runs in its own Python process (``PYTHONPATH`` = the tree), the trees
alternate ``--rounds`` times, and each case keeps the best of ``--repeat`` timed
calls over all rounds: on a small shared machine the same code varies by tens of
per cent from run to run, so only best-of-many figures compare. Cases (float32,
ms per step): explicit, implicit, lod and spectral transport at 64³ and 100³
(D = 1000 µm²/s, dt = 0.01 s), and 1e4/1e5 cells on a 64³ explicit grid with
fixed rates and with a Hill response every step; implicit and lod at 64³ with held voxels
(a vessel).

Usage::

    git worktree add /tmp/before <commit>
    python scripts/bench_ab.py /tmp/before            # after = this checkout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CASES = r'''
import json, sys, time
import jax.numpy as jnp, numpy as np
import jaxcell as jc
repeat = int(sys.argv[1])
out = {}

def per_step(model, state, steps, dt=0.01):
    run = lambda: jc.simulate(model, state, steps * dt, dt)[0].fields.block_until_ready()
    run()
    best = 1e9
    for _ in range(repeat):
        t = time.perf_counter(); run(); best = min(best, time.perf_counter() - t)
    return best / steps

for solver, steps in (("explicit", 100), ("implicit", 100), ("lod", 20), ("spectral", 20)):
    for n in (64, 100):
        m = jc.Model(jc.Grid((n, n, n), 10.0), jc.Substrate("s", 1000.0, 0.01), solver=solver)
        out[f"{solver} {n}"] = per_step(m, m.init(fields=jnp.ones((1, n, n, n), jnp.float32)), steps)
g = jc.Grid((64, 64, 64), 10.0)
vessel = np.zeros(g.shape, bool)
vessel[28:36, 28:36, :] = True  # held voxels (a vessel along z)
for solver, steps in (("implicit", 100), ("lod", 20)):
    m = jc.Model(g, jc.Substrate("s", 1000.0, 0.01), solver=solver, dirichlet_mask=vessel, dirichlet_value=1.0)
    out[f"{solver} held 64"] = per_step(m, m.init(fields=jnp.ones((1, 64, 64, 64), jnp.float32)), steps)
rng = np.random.default_rng(0)
resp = (jc.Response("s", "s", max=20.0, K=1.0, basal=5.0, parameter="uptake", kind="concentration"),)
for mode, responses, steps in (("fixed", (), 50), ("response", resp, 20)):
    m = jc.Model(g, jc.Substrate("s", 1000.0, 0.01), solver="explicit", responses=responses)
    for nc in (10_000, 100_000):
        pos = (rng.random((nc, 3)) * 640).astype(np.float32)
        st = m.init(jc.Cells(pos, secretion=1.0, uptake=10.0), fields=jnp.ones((1, 64, 64, 64), jnp.float32))
        out[f"cells {mode} {nc:.0e}"] = per_step(m, st, steps)
print(json.dumps(out))
'''


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before", help="source tree of the code before (a git worktree)")
    p.add_argument("after", nargs="?", default=str(Path(__file__).resolve().parent.parent),
                   help="source tree after (default: this checkout)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=11)
    a = p.parse_args()
    trees = {"before": a.before, "after": a.after}
    res: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for _ in range(a.rounds):
        for name, tree in trees.items():
            done = subprocess.run([sys.executable, "-c", CASES, str(a.repeat)], cwd="/tmp", capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": tree})
            if done.returncode:
                sys.exit(f"{name} ({tree}) failed:\n{done.stderr[-3000:]}")
            res[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'case':22} {'before ms':>10} {'after ms':>10} {'after/before':>12}")
    for k in res["after"][0]:
        b = min(r[k] for r in res["before"]) * 1e3
        x = min(r[k] for r in res["after"]) * 1e3
        print(f"{k:22} {b:10.3f} {x:10.3f} {x / b:12.3f}")


if __name__ == "__main__":
    main()
