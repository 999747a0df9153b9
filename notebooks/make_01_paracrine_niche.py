"""Generate notebooks/01_paracrine_niche.ipynb (saved without outputs).

Usage: python notebooks/make_01_paracrine_niche.py [--execute]
(--execute runs it once with nbclient to check it, without saving the outputs.)
"""

from __future__ import annotations

from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgen import write

HERE = Path(__file__).resolve().parent
PATH = HERE / "01_paracrine_niche.ipynb"

CELLS = [
    new_markdown_cell("""# An IL-2 paracrine niche

A few helper T cells secrete IL-2 into a block of tissue full of responder T cells that
bind it through high-affinity receptors (Thurley lab; Tkach et al. 2014). This notebook builds the
built-in default scenario of `jaxcell run` directly with the Python API, runs it at a small size,
and looks at the field and at the responders.

Units everywhere: lengths µm, times s, concentrations molecules/µm³ (1 nM = 0.6022 molecules/µm³)."""),
    new_code_cell("""import time

import matplotlib.pyplot as plt
import numpy as np

import jaxcell as jc
from jaxcell.scenario import load"""),
    new_markdown_cell("""## Tissue, cytokine, cells

Published numbers: D = 10 µm²/s, k_on = 3.1·10⁷ /M/s = 0.0515 µm³/s, k_off = 2.3·10⁻⁴ /s,
k_endo = 1.1·10⁻³ /s, 10²–10⁴ receptors per cell, secretion 7.5–225 molecules/cell/s.
We use fewer responders than the default scenario (600 instead of 1500) and 15 minutes instead of an hour."""),
    new_code_cell("""grid = jc.Grid(shape=(32, 32, 16), spacing=10.0)              # 320 x 320 x 160 µm
il2 = jc.Substrate("IL-2", diffusion=10.0, decay=2.8e-5)         # µm²/s, 1/s

rng = np.random.default_rng(0)
n_prod, n_resp = 10, 600
producers = rng.uniform([60, 60, 40], [260, 260, 120], size=(n_prod, 3))   # µm
responders = rng.uniform(0.0, grid.extent, size=(n_resp, 3))
position = np.concatenate([producers, responders])
is_resp = np.r_[np.zeros(n_prod, bool), np.ones(n_resp, bool)]

secretion = np.where(is_resp, 0.0, 50.0)[:, None]                 # (N, S) molecules/s
total = np.where(is_resp, 1000.0, 0.0)[:, None]                   # receptors per cell
receptors = jc.Receptors(total=total, kon=0.0515, koff=2.3e-4, kint=1.1e-3,
                         synthesis=total * 1e-3, turnover=1e-3)   # steady 1000 receptors without IL-2
cells = jc.Cells(position, secretion=secretion, receptors=receptors, type=is_resp.astype(int))

# activated responders clear more IL-2 (CD25 up-regulation): uptake = 20 µm³/s · C²/(150² + C²)
feedback = jc.Response(target="IL-2", signal="IL-2", parameter="uptake", kind="bound",
                       max=20.0, K=150.0, n=2.0, cell_type=1)
model = jc.Model(grid, [il2], solver="implicit", responses=[feedback])
state = model.init(cells)
print(model.grid, cells.n, "cells")"""),
    new_markdown_cell("## Fifteen minutes of signalling"),
    new_code_cell("""t0 = time.perf_counter()
state, traj = jc.simulate(model, state, t_end=900.0, dt=5.0, save_every=150.0, save_cells=True)
state.fields.block_until_ready()
print(f"{time.perf_counter() - t0:.1f} s including compilation; frames at", np.asarray(traj.times))
{k: float(v[0]) for k, v in jc.budget(state).items()}"""),
    new_markdown_cell("## The field in the mid-plane, and the responders"),
    new_code_cell("""THRESHOLD = 150.0   # bound receptors for a responder to count as activated
bound = np.asarray(traj.cells.receptors.bound[:, :, 0])        # (T, N)
activated = (bound >= THRESHOLD) & is_resp

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
zi = grid.shape[2] // 2
zc = grid.centers(2)[zi]
im = ax1.imshow(np.asarray(state.fields[0, :, :, zi]).T, origin="lower",
                extent=(0, grid.extent[0], 0, grid.extent[1]))
near = np.abs(position[:, 2] - zc) <= grid.spacing[2]
ax1.scatter(*position[near & ~is_resp, :2].T, c="red", s=25, label="producers")
ax1.scatter(*position[near & activated[-1], :2].T, c="white", s=8, label="activated responders")
ax1.scatter(*position[near & is_resp & ~activated[-1], :2].T, facecolors="none", edgecolors="white",
            s=8, label="other responders")
ax1.set(title=f"IL-2 at z = {zc:g} µm, t = 900 s", xlabel="x (µm)", ylabel="y (µm)")
ax1.legend(fontsize=7)
fig.colorbar(im, ax=ax1, label="molecules/µm³")

ax2.hist(bound[-1, is_resp], bins=40)
ax2.axvline(THRESHOLD, color="k", ls="--")
ax2.set(title="bound IL-2 receptors per responder", xlabel="complexes", ylabel="cells")

ax3.plot(np.asarray(traj.times), activated[:, is_resp].mean(axis=1), "o-")
ax3.set(title="responders activated", xlabel="time (s)", ylabel="fraction", ylim=(0, 1))
plt.show()"""),
    new_markdown_cell("""## The same scenario from its TOML file

`jaxcell run` reads the built-in scenario `paracrine_niche` (see `jaxcell run --list`); the loader
gives the same objects, and `--set`-style overrides shrink it."""),
    new_code_cell("""sc = load("paracrine_niche", ["cells[1].count=600", "run.t_end=300", "run.save_every=150"])
print(sc.config["title"])
print(sc.types, sc.n_cells, "cells;", sc.run)
s2, _ = jc.simulate(sc.model, sc.init_state(), t_end=sc.run.t_end, dt=sc.run.dt)
print("activated fraction of responders at 300 s:",
      sc.activated(s2.cells, None)[sc.has_activation()].mean())"""),
]



if __name__ == "__main__":
    write(PATH, CELLS)
