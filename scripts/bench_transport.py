"""Transport throughput: voxel-updates/s of every solver against the copy-bandwidth roofline.

One voxel-update is one voxel of one substrate advanced by one step ``dt``
(for ``explicit`` a step may hold several FTCS sub-steps; they are printed).
The roofline is the measured copy bandwidth divided by 8 bytes per
voxel-update (one float32 read and one write), i.e. a stepper that touched
the field exactly once per step. Reference: BioFVM's implicit LOD reaches
1.9e7 voxel-updates/s at 100³ with 2 threads (Ghaffarizadeh et al. 2016).

Usage::

    python scripts/bench_transport.py [--sizes 100,128,256] [--steps 10] [--solvers implicit,lod]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxcell as jc

SOLVERS = jc.solvers.names()
BIOFVM_100 = 1.9e7  # voxel-updates/s, implicit LOD at 100³, 2 threads
D, DECAY, SPACING, DT = 1000.0, 0.01, 10.0, 0.01  # µm²/s, 1/s, µm, s (explicit: one sub-step)


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    """Smallest wall time (s) of ``repeat`` calls of ``fn`` (which must block)."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def copy_bandwidth(n: int = 256, repeat: int = 5, passes: int = 10) -> dict[str, float]:
    """Copy bandwidth (GB/s = bytes read + written / time) of an ``n³`` float32 array.

    ``jax``: one jitted ``x + 0`` call (allocates its output, like every
    un-donated call); ``jax-stream``: ``passes`` in-place ``x * s`` passes in
    one executable (steady state, buffers reused); ``numpy``: ``np.copyto``
    into a preallocated array.
    """
    x = jnp.ones((n, n, n), jnp.float32)
    nbytes = 2 * x.nbytes
    copy = jax.jit(lambda a: a + 0)
    copy(x).block_until_ready()
    t_jax = best_time(lambda: copy(x).block_until_ready(), repeat)
    stream = jax.jit(lambda a: jax.lax.fori_loop(0, passes, lambda i, b: b * jnp.float32(0.999), a))
    stream(x).block_until_ready()
    t_stream = best_time(lambda: stream(x).block_until_ready(), repeat) / passes
    xn = np.ones((n, n, n), np.float32)
    out = np.empty_like(xn)
    np.copyto(out, xn)
    t_np = best_time(lambda: np.copyto(out, xn), repeat)
    return {"jax": nbytes / t_jax / 1e9, "jax-stream": nbytes / t_stream / 1e9, "numpy": nbytes / t_np / 1e9}


def make_model(n: int, solver: str) -> jc.Model:
    grid = jc.Grid((n, n, n), SPACING)
    return jc.Model(grid, jc.Substrate("s", D, DECAY), solver=solver)


def initial_fields(n: int) -> jax.Array:
    x = np.linspace(0.0, 1.0, n, dtype=np.float32)
    f = 1.0 + np.exp(-((x[:, None, None] - 0.5) ** 2 + (x[None, :, None] - 0.3) ** 2 + x[None, None, :] ** 2) * 20)
    return jnp.asarray(f[None], jnp.float32)


def time_simulate(model: jc.Model, n: int, steps: int, repeat: int) -> tuple[float, float]:
    """(compile + first call s, best timed call s) of ``jc.simulate`` over ``steps`` steps."""
    state = model.init(fields=initial_fields(n))

    def run() -> None:
        new, _ = jc.simulate(model, state, steps * DT, DT)
        new.fields.block_until_ready()

    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    return first, best_time(run, repeat)


def time_bare_step(model: jc.Model, n: int, repeat: int) -> tuple[float, float | None]:
    """(best s, XLA temp bytes per voxel) of one jitted diffusion step, setup hoisted, budget included.

    Calls the model's solver through its interface (:mod:`jaxcell.solvers`): no
    scan, no cells, the solver's setup (implicit/lod line solvers) built once
    outside the timed call.
    """
    dt = jnp.asarray(DT, jnp.float32)
    scheme = model.scheme
    plan = scheme.plan(model, DT)[0]
    p = model.params(0, jnp.float32)
    c0 = initial_fields(n)[0]
    setup = jax.jit(lambda: scheme.init(model, p, dt, plan))()
    step = jax.jit(lambda c, s: scheme.step(model, p, s, c, None, dt, plan, None))
    compiled = step.lower(c0, setup).compile()
    temp = None
    try:
        temp = compiled.memory_analysis().temp_size_in_bytes / n**3
    except (AttributeError, TypeError):  # memory_analysis is backend dependent
        pass
    jax.block_until_ready(compiled(c0, setup))
    return best_time(lambda: jax.block_until_ready(compiled(c0, setup)), repeat), temp


def numpy_ftcs(n: int, steps: int, repeat: int) -> float:
    """Best s for ``steps`` FTCS steps of the same no-flux conservative stencil in plain NumPy (in place)."""
    c = np.asarray(initial_fields(n)[0])
    out = np.empty_like(c)
    diff = np.empty_like(c)
    a = np.float32(D * DT / SPACING**2)
    keep = np.float32(1 - DT * DECAY)

    def one(c: np.ndarray, out: np.ndarray) -> None:
        np.multiply(c, keep, out=out)
        for ax in range(3):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[ax], hi[ax] = slice(0, n - 1), slice(1, n)
            d = diff[tuple(lo)]
            np.subtract(c[tuple(hi)], c[tuple(lo)], out=d)  # c[i+1] - c[i]: flux through face i+1/2
            d *= a
            out[tuple(lo)] += d
            out[tuple(hi)] -= d

    def run() -> None:
        x, y = c.copy(), out
        for _ in range(steps):
            one(x, y)
            x, y = y, x

    return best_time(run, repeat)


def run(sizes: tuple[int, ...] = (100, 128, 256), steps: int = 10, solvers: tuple[str, ...] = SOLVERS,
        repeat: int = 2, numpy_baseline: bool = True) -> list[dict[str, Any]]:
    """Print the throughput table; returns one dict per (solver, size)."""
    bw = copy_bandwidth(256)
    bw_cache = copy_bandwidth(100)
    roof = max(bw.values()) * 1e9 / 8
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), float32")
    for label, b in (("256³ (64 MiB, DRAM)", bw), ("100³ (4 MB, fits L2/L3)", bw_cache)):
        print(f"copy bandwidth {label}: jax x+0 {b['jax']:.1f} GB/s, jax in-place stream "
              f"{b['jax-stream']:.1f} GB/s, numpy copyto {b['numpy']:.1f} GB/s")
    print(f"roofline = best 256³ bandwidth / 8 B per voxel-update = {roof:.3g} voxel-updates/s")
    print(f"state: {np.dtype(np.float32).itemsize} bytes/voxel/substrate (fields; 'tmp B/vox' is XLA scratch "
          f"of one bare step); "
          f"BioFVM implicit LOD at 100³, 2 threads: {BIOFVM_100:.2g} voxel-updates/s")
    head = (f"{'solver':9} {'n':>4} {'sub':>3} {'compile s':>9} {'step ms':>8} {'vox-upd/s':>10} "
            f"{'%roof':>6} {'xBioFVM':>7} {'bare ms':>8} {'bare v/s':>9} {'tmp B/vox':>9}")
    print(head)
    rows = []
    for solver in solvers:
        for n in sizes:
            model = make_model(n, solver)
            n_sub = model.scheme.plan(model, DT)[0] if solver == "explicit" else 1
            first, t = time_simulate(model, n, steps, repeat)
            rate = steps * n**3 / t
            try:
                t_bare, temp = time_bare_step(model, n, repeat)
            except Exception as err:  # private API moved: keep the public numbers
                print(f"  (bare step unavailable: {type(err).__name__}: {err})")
                t_bare, temp = float("nan"), None
            row = {"solver": solver, "n": n, "substeps": n_sub, "compile_s": first - t, "step_s": t / steps,
                   "rate": rate, "roofline_fraction": rate / roof, "bare_step_s": t_bare,
                   "bare_rate": n**3 / t_bare, "temp_bytes_per_voxel": temp}
            rows.append(row)
            print(f"{solver:9} {n:>4} {n_sub:>3} {first - t:>9.2f} {1e3 * t / steps:>8.2f} {rate:>10.3g} "
                  f"{100 * rate / roof:>5.1f}% {rate / BIOFVM_100:>7.2f} {1e3 * t_bare:>8.2f} "
                  f"{n**3 / t_bare:>9.3g} {'-' if temp is None else f'{temp:.1f}':>9}", flush=True)
    if numpy_baseline:
        for n in sizes:
            t = numpy_ftcs(n, steps, repeat)
            rate = steps * n**3 / t
            rows.append({"solver": "numpy-ftcs", "n": n, "rate": rate, "roofline_fraction": rate / roof})
            print(f"{'numpy FTCS':9} {n:>4} {1:>3} {'-':>9} {1e3 * t / steps:>8.2f} {rate:>10.3g} "
                  f"{100 * rate / roof:>5.1f}% {rate / BIOFVM_100:>7.2f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100,128,256", help="comma-separated cube edges (voxels)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed simulate call")
    p.add_argument("--solvers", default=",".join(SOLVERS))
    p.add_argument("--repeat", type=int, default=2, help="timed calls per case (best is kept)")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy FTCS baseline")
    a = p.parse_args()
    run(tuple(int(s) for s in a.sizes.split(",")), a.steps, tuple(a.solvers.split(",")), a.repeat,
        not a.no_numpy)


if __name__ == "__main__":
    main()
