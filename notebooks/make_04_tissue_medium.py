"""Generate notebooks/04_tissue_medium.ipynb (saved without outputs).

Usage: python notebooks/make_04_tissue_medium.py [--execute]
(--execute runs it once with nbclient to check it, without saving the outputs.)
"""

from __future__ import annotations

from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgen import write

HERE = Path(__file__).resolve().parent
PATH = HERE / "04_tissue_medium.ipynb"

CELLS = [
    new_markdown_cell("""# The tissue medium: matrix, two tissues, flow

A paracrine signal acts only nearby because it is degraded, sequestered by the extracellular
matrix, or carried away. This notebook shows three things the tissue around the cells does to a
gradient, each against its closed form:

1. **Matrix binding** (heparan-sulfate proteoglycans): a morphogen's gradient forms more slowly,
   but when nothing is degraded on the matrix its steady length stays √(D/k).
2. **Two tissues**: where D and decay change (an epithelium over a denser stroma) the flux is
   continuous and the gradient's slope jumps.
3. **Interstitial flow**: a chemokine source in 1 µm/s flow makes a gradient that is long
   downstream and short upstream.

Units: µm, s; in these 1D/2D sheets concentrations are amount/µm (1D) or amount/µm² (2D)."""),
    new_code_cell("""import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

import jaxcell as jc

HOUR = 3600.0"""),
    new_markdown_cell("""## 1. A Dpp-like morphogen with and without matrix binding sites

Dpp in the wing disc (Kicheva et al. 2007): D = 0.1 µm²/s, k = 2.52e-4 /s, so λ = √(D/k) ≈ 20 µm.
A 10 µm stripe produces it. The matrix holds 3 sites/µm with K_d = koff/kon = 1 amount/µm: while
the ligand is far below K_d, a fraction 3/(1 + 3) of it sits on the matrix at any time, and the
gradient should form 1 + sites/K_d = 4 times more slowly."""),
    new_code_cell("""grid = jc.Grid(shape=(100,), spacing=2.0)                 # 200 µm of epithelium
x = grid.centers(0)
stripe = np.where(x < 10.0, 1e-5, 0.0)                    # production, amount/(µm·s)
D, k = 0.1, 2.52e-4
times = np.array([1, 2, 4, 8, 16, 32]) * HOUR

runs = {}
for label, matrix in (("no matrix", None), ("with matrix", jc.Matrix(sites=3.0, kon=0.01, koff=0.01))):
    model = jc.Model(grid, jc.Substrate("Dpp", D, k, production=stripe, matrix=matrix))
    state, traj = jc.simulate(model, model.init(), times[-1], 120.0, save_at=times)
    runs[label] = (state, traj)
steady = np.asarray(jc.steady_state(jc.Model(grid, jc.Substrate("Dpp", D, k, production=stripe)))[0])

fig, axs = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
for ax, label in zip(axs[:2], runs):
    for j, t in enumerate(times):
        ax.plot(x, np.asarray(runs[label][1].fields[j, 0]), color=plt.cm.viridis(j / (len(times) - 1)),
                label=f"{t / HOUR:g} h")
    ax.plot(x, steady, "k--", label="steady state")
    ax.set(title=f"free Dpp, {label}", xlabel="x (µm); the stripe is 0–10 µm",
           ylabel="free Dpp (amount/µm)")
    ax.legend(fontsize=7)
sel = (x > 20) & (x < 80)
for label, (_, traj) in runs.items():
    amp = [np.asarray(traj.fields[j, 0])[10] / steady[10] for j in range(len(times))]
    axs[2].plot(times / HOUR, amp, "o-", label=label)
tt = np.linspace(0, times[-1], 200)
axs[2].plot(tt / HOUR, 1 - np.exp(-k * tt), ":", color="C0", label="$1 - e^{-kt}$")
axs[2].plot(tt / HOUR, 1 - np.exp(-k * tt / 4), ":", color="C1", label="$1 - e^{-kt/4}$ (retarded)")
axs[2].set(title="how far the gradient has formed (at x = 21 µm)", xlabel="time (h)",
           ylabel="free Dpp / its steady value")
axs[2].legend(fontsize=7)
plt.show()"""),
    new_markdown_cell("""The dotted curves are the formation of a uniform source, a guide for the eye: the gradient near
the source follows them, the matrix one about four times more slowly. The steady length is the
same with and without the matrix, because nothing is degraded on it:"""),
    new_code_cell("""for label, (state, _) in runs.items():
    c = np.asarray(state.fields[0])
    lam = -1 / np.polyfit(x[sel], np.log(c[sel]), 1)[0]
    b = jc.budget(state)
    print(f"{label:12s} steady length {lam:5.2f} µm (√(D/k) = {math.sqrt(D / k):.2f} µm); "
          f"on the matrix {float(b['matrix'][0]) / float(b['produced'][0]):5.1%} of what was made; "
          f"budget residual {float(b['residual'][0]) / float(b['produced'][0]):.1e} of it")"""),
    new_markdown_cell("""## 2. Two tissues: an epithelium (D = 40 µm²/s) over a denser stroma (D = 4 µm²/s)

D and k are arrays of the grid's shape; the face between two voxels uses the harmonic mean of
their D, so the flux is continuous. The closed form: `c = c₀cosh(x/λ₁) + B sinh(x/λ₁)` in the first
layer, `c_a e^{−(x−a)/λ₂}` in the second, with c and D·c' continuous at the interface a."""),
    new_code_cell("""grid = jc.Grid(shape=(200,), spacing=1.0)
x = grid.centers(0)
a, D1, k1, D2, k2 = 60.0, 40.0, 0.01, 4.0, 0.04
Dmap, kmap = np.where(x < a, D1, D2), np.where(x < a, k1, k2)
model = jc.Model(grid, jc.Substrate("FGF", Dmap, kmap, boundary={"x-": jc.Dirichlet(1.0)}))
c = np.asarray(jc.steady_state(model)[0])

l1, l2 = math.sqrt(D1 / k1), math.sqrt(D2 / k2)
ch, sh = math.cosh(a / l1), math.sinh(a / l1)
B = -(D1 / l1 * sh + D2 / l2 * ch) / (D1 / l1 * ch + D2 / l2 * sh)
exact = np.where(x < a, np.cosh(x / l1) + B * np.sinh(x / l1), (ch + B * sh) * np.exp(-(x - a) / l2))

fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
ax.plot(x, c, "o", ms=3, label="jaxcell (steady_state)")
ax.plot(x, exact, "k-", label="two-layer closed form")
ax.axvspan(a, x[-1], color="0.9", label="stroma: D 10× lower, decay 4× higher")
ax.set(xlabel="depth (µm)", ylabel="FGF (held at 1 at the surface)", yscale="log")
ax.legend()
plt.show()
print("largest difference from the closed form:", float(np.abs(c - exact).max()))"""),
    new_markdown_cell("""## 3. A chemokine in interstitial flow

Tumour cells secrete CCL21 (Shields et al. 2007); interstitial fluid flows through the tissue at
about 1 µm/s towards a lymphatic. Fluid enters clean at x = 0 (`jc.Dirichlet(0.0)`: the inflow
concentration) and leaves at x = 800 µm (`jc.Robin(0.0)`: an outflow face). In 1D the decay lengths
are 2D/(√(v² + 4Dk) ∓ v) downstream and upstream."""),
    new_code_cell("""grid = jc.Grid(shape=(80, 40), spacing=10.0)                   # 800 x 400 µm
D, k = 100.0, 1e-2
rng = np.random.default_rng(0)
pos = np.array([300.0, 200.0]) + rng.normal(0, 20.0, (30, 2))
cells = jc.Cells(position=pos, secretion=np.full(30, 0.01))
faces = {"x-": jc.Dirichlet(0.0), "x+": jc.Robin(0.0)}
fields = {}
for v in (0.0, 1.0):
    model = jc.Model(grid, jc.Substrate("CCL21", D, k, boundary=faces, velocity=(v, 0.0)))
    fields[v] = np.asarray(jc.steady_state(model, cells)[0])

fig, axs = plt.subplots(1, 3, figsize=(16, 4), layout="constrained")
ext = [0, 800, 0, 400]
for ax, v in zip(axs[:2], fields):
    im = ax.imshow(fields[v].T, origin="lower", extent=ext, cmap="magma",
                   norm=LogNorm(vmin=1e-6, vmax=fields[0.0].max()))
    ax.contour(grid.centers(0), grid.centers(1), fields[v].T, levels=[1e-5, 1e-4], colors="w", linewidths=0.8)
    ax.plot(*pos.T, "c.", ms=3)
    ax.set(title=f"CCL21, flow {v:g} µm/s → (contours 1e-5, 1e-4)", xlabel="x (µm)", ylabel="y (µm)")
    fig.colorbar(im, ax=ax, label="CCL21 (amount/µm²)")
x = grid.centers(0)
for v, f in fields.items():
    axs[2].semilogy(x, f[:, 20], label=f"flow {v:g} µm/s")
axs[2].set(title="along the flow through the cluster", xlabel="x (µm)", ylabel="CCL21 (amount/µm²)")
axs[2].legend()
plt.show()

root = math.sqrt(1.0 + 4 * D * k)
print(f"1D decay lengths with flow: downstream {2 * D / (root - 1):.0f} µm, upstream {2 * D / (root + 1):.0f} µm; "
      f"without flow {math.sqrt(D / k):.0f} µm both ways")
f = fields[1.0][:, 20]
for side, lo, hi in (("downstream", 400, 700), ("upstream", 120, 220)):
    s = (x > lo) & (x < hi)
    print(f"  fitted {side}: {abs(1 / np.polyfit(x[s], np.log(f[s]), 1)[0]):.0f} µm "
          "(a 2D cluster, not a 1D line source: close, not equal)")"""),
    new_markdown_cell("""Cells downstream of the cluster see a shallow, far-reaching gradient and cells upstream a
steep, short one: the flow alone biases which neighbours the signal reaches. `jaxcell run chemokine_flow`
runs the same setting as a scenario file, with CCR7+ reader cells, and `jaxcell run
matrix_morphogen` the matrix example; both write `tissue.png`."""),
]

if __name__ == "__main__":
    write(PATH, CELLS)
