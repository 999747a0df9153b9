"""Generate notebooks/03_wound_healing.ipynb (saved without outputs).

Usage: python notebooks/make_03_wound_healing.py [--execute]
(--execute runs it once with nbclient to check it, without saving the outputs.)
"""

from __future__ import annotations

from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgen import write

HERE = Path(__file__).resolve().parent
PATH = HERE / "03_wound_healing.ipynb"

CELLS = [
    new_markdown_cell("""# Cells that live: fibroblasts closing a wound

Cells in the wound bed (platelets, macrophages) secrete a growth factor, PDGF. Fibroblasts in the
surrounding dermis take it up, crawl up its gradient and divide where it is high, and so fill the
wound. Everything here runs inside one compiled loop: the transport of PDGF, the cells' secretion and
uptake, and their behaviour, written as PhysiCell-style signal → behaviour rules (`jc.Rule`).

The numbers are orders of magnitude, not a fit: fibroblasts crawl 10–30 µm/h and double in about a
day when stimulated; PDGF-sized proteins diffuse at tens of µm²/s in tissue.
Units: µm, s; in this 2D slab concentrations are molecules/µm² and uptake µm²/s."""),
    new_code_cell("""import time

import matplotlib.pyplot as plt
import numpy as np

import jaxcell as jc

HOUR = 3600.0"""),
    new_markdown_cell("""## The tissue, the growth factor and the cells

A 1.2 × 0.6 mm slab of dermis; the wound is the band 400 µm < x < 800 µm. `jc.Cells` has a fixed
capacity: slots with `alive=False` are free for daughters."""),
    new_code_cell("""grid = jc.Grid(shape=(60, 30), spacing=20.0)                      # 1200 x 600 µm
pdgf = jc.Substrate("PDGF", diffusion=50.0, decay=1e-4)              # µm²/s, 1/s (half-life ~2 h)
model = jc.Model(grid, [pdgf], solver="implicit")
WOUND = (400.0, 800.0)

rng = np.random.default_rng(1)
n_src, n_fib, capacity = 200, 300, 2000
sources = np.c_[rng.uniform(420, 780, n_src), rng.uniform(10, 590, n_src)]            # in the wound bed
x = np.r_[rng.uniform(0, 380, n_fib // 2), rng.uniform(820, 1200, n_fib - n_fib // 2)]
fibroblasts = np.c_[x, rng.uniform(0, 600, n_fib)]                                     # in the dermis
free = np.full((capacity - n_src - n_fib, 2), 600.0)
position = np.r_[sources, fibroblasts, free]
cell_type = np.r_[np.zeros(n_src, int), np.ones(capacity - n_src, int)]              # 0 source, 1 fibroblast
cells = jc.Cells(position, type=cell_type, alive=np.arange(capacity) < n_src + n_fib,
                 secretion=np.where(cell_type == 0, 1.0, 0.0),                       # molecules/s
                 uptake=np.where(cell_type == 1, 2.0, 0.0),                          # µm²/s
                 volume=2000.0)                                                     # µm³"""),
    new_markdown_cell("""## What the fibroblasts do

Two rules and two base rates. Hill factors combine as in PhysiCell: a rule moves a behaviour from its
base value toward `max` by `(c/K)^n / (1 + (c/K)^n)`. Division and death rates become per-step
probabilities `1 − exp(−r·dt)` drawn from the run's seed."""),
    new_code_cell("""behaviour = jc.rules([
    # crawl up the PDGF gradient, up to 0.004 µm/s = 14 µm/h
    jc.Rule("PDGF", "concentration", "chemotaxis:PDGF", "up", max=0.004, K=0.05, n=1.0, cell_type=1),
    # divide up to once per 28 h where PDGF is high
    jc.Rule("PDGF", "concentration", "division", "up", max=1e-5, K=0.2, n=2.0, cell_type=1),
], base={"speed": [0.0, 0.003],          # random crawling, µm/s, per type (sources stay put)
         "death": [0.0, 1e-6]})           # 1/s

t0 = time.perf_counter()
state, traj = jc.simulate(model, model.init(cells), t_end=48 * HOUR, dt=120.0, save_every=2 * HOUR,
                          behaviour=behaviour, save_cells=True, seed=0)
print(f"48 h in {time.perf_counter() - t0:.1f} s wall ({int(state.steps)} steps, {capacity} cell slots)")
b = jc.budget(state)
print("PDGF budget residual / secreted:", float(b["residual"][0] / b["secreted"][0]))"""),
    new_markdown_cell("""## The wound fills

PDGF (colour) with the fibroblasts (white) and the secreting cells (red) at four times. jaxcell has
no cell mechanics yet: cells do not push each other, so fibroblasts that reach the top of the gradient
crowd there instead of spreading."""),
    new_code_cell("""hours = np.asarray(traj.times) / HOUR
alive = np.asarray(traj.cells.alive)
pos = np.asarray(traj.cells.position)
kind = np.asarray(traj.cells.type)
fields = np.asarray(traj.fields)[:, 0]
vmax = float(fields.max())

fig, axes = plt.subplots(1, 4, figsize=(16, 3.4), constrained_layout=True)
for ax, h in zip(axes, (0, 12, 24, 48)):
    i = int(np.argmin(abs(hours - h)))
    im = ax.imshow(fields[i].T, origin="lower", extent=(0, 1200, 0, 600), vmin=0, vmax=vmax, cmap="viridis")
    fib = alive[i] & (kind[i] == 1)
    src = alive[i] & (kind[i] == 0)
    ax.scatter(*pos[i, fib].T, s=3, c="white")
    ax.scatter(*pos[i, src].T, s=4, c="red", marker="x")
    for xw in WOUND:
        ax.axvline(xw, color="0.8", ls="--", lw=0.8)
    ax.set(title=f"{hours[i]:.0f} h: {fib.sum()} fibroblasts", xlabel="x (µm)", ylabel="y (µm)")
fig.colorbar(im, ax=axes, label="PDGF (molecules/µm²)")
plt.show()"""),
    new_code_cell("""fib = alive & (kind == 1)
inside = fib & (pos[..., 0] > WOUND[0]) & (pos[..., 0] < WOUND[1])
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
ax1.plot(hours, fib.sum(1), "o-", label="all fibroblasts")
ax1.plot(hours, inside.sum(1), "s-", label="inside the wound")
ax1.set(xlabel="time (h)", ylabel="cells", title="fibroblasts migrate in and proliferate")
ax1.legend(loc="upper left")
# tracks of 25 of the original fibroblasts, up to their death. A freed slot may take a daughter
# between two frames: a jump longer than a cell crawls in 2 h (< 60 µm) marks that, and ends the track.
jump = np.r_[np.zeros((1, capacity)), np.linalg.norm(np.diff(pos, axis=0), axis=-1)] > 100.0
for j in range(n_src, n_src + n_fib, 12):
    live = np.cumprod(alive[:, j] & ~jump[:, j]).astype(bool)
    ax2.plot(pos[live, j, 0], pos[live, j, 1], "-", lw=1)
    ax2.plot(pos[0, j, 0], pos[0, j, 1], "k.", ms=3)
for xw in WOUND:
    ax2.axvline(xw, color="0.5", ls="--", lw=0.8)
ax2.set(xlim=(0, 1200), ylim=(0, 600), aspect="equal", xlabel="x (µm)", ylabel="y (µm)",
        title="tracks over 48 h (dot: start)")
plt.show()"""),
    new_markdown_cell("""## Rules are parameters

The rules' `max`, `K` and `n` are traced: `jax.grad` reaches them through the whole run (the random
draws are fixed by the seed), and new values do not recompile. Here: how the amount of PDGF the
fibroblasts clear in 6 h depends on their maximal chemotactic speed."""),
    new_code_cell("""import jax

# "linear" coupling: a cell's uptake varies smoothly with its position, so the derivative is not 0
smooth = jc.Model(grid, [pdgf], solver="implicit", coupling="linear")

def cleared(vmax):
    beh = jc.rules([jc.Rule("PDGF", "concentration", "chemotaxis:PDGF", "up", max=vmax, K=0.05, cell_type=1)],
                   base={"speed": [0.0, 0.003]})
    s, _ = jc.simulate(smooth, smooth.init(cells), t_end=6 * HOUR, dt=120.0, behaviour=beh)
    return jc.budget(s)["uptake"][0]

value, slope = jax.value_and_grad(cleared)(0.004)
h = 1e-4
fd = (cleared(0.004 + h) - cleared(0.004 - h)) / (2 * h)
print(f"PDGF cleared in 6 h: {float(value):.4g} molecules")
print(f"d/d(vmax): {float(slope):.4g} (autodiff) vs {float(fd):.4g} (finite differences) molecules per µm/s")"""),
]



if __name__ == "__main__":
    write(PATH, CELLS)
