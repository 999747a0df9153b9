"""Can several FTCS steps per pass through memory beat the one-pass roofline on this machine?

Issue 6 asks for temporal blocking (several explicit steps per trip through
DRAM) so that the explicit stencil passes the one-pass roofline (copy bandwidth
÷ 8 B per voxel-update). That can only pay if the stencil, once its working
set sits in cache, runs faster than the roofline. This script measures each
piece, on a no-flux cube with uniform D and k (the same stencil as
``solver="explicit"``):

1. the roofline (``bench_transport.copy_bandwidth``);
2. the in-cache ceiling: one pass of the cheapest stencil XLA compiles (shifted
   slices of a zero-ghost field, no boundary branches) at working sets from
   L2 to DRAM size;
3. the library's step (``diffusion.ftcs_step``, ``steps`` sub-steps per call);
4. ``ghost``: the field kept with one ghost layer in two buffers written in
   turn, two sub-steps per loop iteration (one fused pass per sub-step);
5. ``blocked``: overlapped temporal blocking: slabs of ``b`` planes plus ``K``
   halo planes on each side are copied out, advanced ``K`` sub-steps while
   they sit in cache, and their middle ``b`` planes written back: one DRAM
   pass per ``K`` sub-steps, ``(b + 2K)/b`` of the stencil work.

Every variant is checked against the library's result before it is timed.

Usage::

    python scripts/bench_stencil.py [--n 256] [--steps 16] [--blocks 32x4,32x8,64x8]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transport import best_time, copy_bandwidth  # noqa: E402

import jaxcell as jc  # noqa: E402

D, DECAY, SPACING, DT = 1000.0, 0.01, 10.0, 0.01  # µm²/s, 1/s, µm, s per sub-step (dt·rate/2 = 0.6)


def _face_counts(n: int) -> np.ndarray:
    """Faces each voxel of a no-flux axis exchanges through (1 at the ends, else 2)."""
    count = np.full(n, 2.0)
    count[0] = count[-1] = 1.0
    return count


def _stencil(S: jax.Array, alpha: float, kh: float, count0: jax.Array, live: jax.Array | None = None) -> jax.Array:
    """One no-flux sub-step (FTCS diffusion, implicit decay) of the planes ``1..L−2`` of the zero-ghost block ``S``.

    ``S`` is ``(L, n+2, n+2)``; the update is the library's ``(c + a(Σ neighbours − count·c))/(1 + k·h)``.

    ``count0`` (L,) counts axis-0 faces per plane; ``live`` (L,) is 0 on ghost
    planes, which must stay 0.
    """
    n = S.shape[1] - 2
    c12 = jnp.asarray(_face_counts(n), S.dtype)
    diag = 1 - alpha * (count0[1:-1, None, None] + c12[None, :, None] + c12[None, None, :])
    near = (S[:-2, 1:-1, 1:-1] + S[2:, 1:-1, 1:-1] + S[1:-1, :-2, 1:-1] + S[1:-1, 2:, 1:-1]
            + S[1:-1, 1:-1, :-2] + S[1:-1, 1:-1, 2:])
    new = (diag * S[1:-1, 1:-1, 1:-1] + alpha * near) / (1 + kh)
    return new if live is None else live[1:-1, None, None] * new


def ghost_run(c: jax.Array, steps: int, alpha: float, kh: float) -> jax.Array:
    """``steps`` (even) sub-steps on a one-ghost-layer field in two buffers."""
    n = c.shape[0]
    count0 = jnp.asarray(np.pad(_face_counts(n), 1), c.dtype)

    def pair(_: int, PQ: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        P, Q = PQ
        Q = lax.dynamic_update_slice(Q, _stencil(P, alpha, kh, count0), (1, 1, 1))
        P = lax.dynamic_update_slice(P, _stencil(Q, alpha, kh, count0), (1, 1, 1))
        return P, Q

    P = jnp.pad(c, 1)
    P, _ = lax.fori_loop(0, steps // 2, pair, (P, P))
    return P[1:-1, 1:-1, 1:-1]


def blocked_run(c: jax.Array, steps: int, alpha: float, kh: float, b: int, K: int) -> jax.Array:
    """``steps`` sub-steps, ``K`` per pass, in slabs of ``b`` planes (``n % b == 0``, ``steps % 2K == 0``)."""
    n = c.shape[0]
    L = b + 2 * K
    live = jnp.asarray(np.pad(np.ones(n), K), c.dtype)
    count0 = jnp.asarray(np.pad(_face_counts(n), K), c.dtype)

    def one_pass(P: jax.Array, Q: jax.Array) -> jax.Array:
        def slab(i: jax.Array, Q: jax.Array) -> jax.Array:
            start = i * b
            S = lax.dynamic_slice(P, (start, 0, 0), (L, n + 2, n + 2))
            m = lax.dynamic_slice(live, (start,), (L,))
            cnt = lax.dynamic_slice(count0, (start,), (L,))

            # The halo's outer planes go stale one plane per sub-step; K suffice. An
            # inner loop (not unrolled steps) hands the stencil a plain buffer: XLA
            # otherwise copies each of the first step's seven shifted reads out of P.
            def pair(_: int, ST: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
                S, T = ST
                T = lax.dynamic_update_slice(T, _stencil(S, alpha, kh, cnt, m), (1, 1, 1))
                return lax.dynamic_update_slice(S, _stencil(T, alpha, kh, cnt, m), (1, 1, 1)), T

            S, _ = lax.fori_loop(0, K // 2, pair, (S, S))
            return lax.dynamic_update_slice(Q, S[K:K + b], (K + start, 0, 0))
        return lax.fori_loop(0, n // b, slab, Q)

    def two(_: int, PQ: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        P, Q = PQ
        Q = one_pass(P, Q)
        return one_pass(Q, P), Q

    P = jnp.pad(c, ((K, K), (1, 1), (1, 1)))
    P, _ = lax.fori_loop(0, steps // (2 * K), two, (P, P))
    return P[K:K + n, 1:-1, 1:-1]


def library_run(c: jax.Array, steps: int) -> jax.Array:
    """``steps`` sub-steps of jaxcell's explicit solver (one call of its ``step``)."""
    n = c.shape[0]
    model = jc.Model(jc.Grid((n, n, n), SPACING), jc.Substrate("s", D, DECAY), solver="explicit")
    p = model.params(0, c.dtype)
    dt = jnp.asarray(DT * steps, c.dtype)
    setup = model.scheme.init(model, p, dt, steps)
    return model.scheme.step(model, p, setup, c, None, dt, steps, None)[0]


def initial(n: int, dtype: type = np.float32) -> jax.Array:
    x = np.linspace(0.0, 1.0, n)
    f = 1.0 + np.exp(-((x[:, None, None] - 0.5) ** 2 + (x[None, :, None] - 0.3) ** 2 + x[None, None, :] ** 2) * 20)
    return jnp.asarray(f.astype(dtype))


def variants(steps: int, blocks: list[tuple[int, int]]) -> dict[str, Callable[[jax.Array], jax.Array]]:
    alpha, kh = D * DT / SPACING**2, DECAY * DT
    out = {"library": lambda c: library_run(c, steps), "ghost": lambda c: ghost_run(c, steps, alpha, kh)}
    for b, K in blocks:
        out[f"blocked b={b} K={K}"] = lambda c, b=b, K=K: blocked_run(c, steps, alpha, kh, b, K)
    return out


def in_cache_ceiling(n_voxels: float, repeat: int) -> float:
    """Voxel-updates/s of one stencil pass on a cube of about ``n_voxels`` (output allocated per call)."""
    n = max(8, round(n_voxels ** (1 / 3)))
    P = jnp.pad(initial(n), 1)
    f = jax.jit(lambda P: _stencil(P, 0.1, 0.001, jnp.asarray(np.pad(_face_counts(n), 1), P.dtype)))
    f(P).block_until_ready()
    return n**3 / best_time(lambda: f(P).block_until_ready(), repeat)


def run(n: int = 256, steps: int = 16, blocks: tuple[tuple[int, int], ...] = ((32, 4), (32, 8), (64, 8)),
        repeat: int = 3) -> None:
    bw = copy_bandwidth(repeat=repeat)
    roof = max(bw["jax-stream"], bw["numpy"]) * 1e9 / 8
    print(f"jax {jax.__version__} on {jax.default_backend()}, float32; roofline {roof:.2e} voxel-updates/s "
          f"(copy {max(bw['jax-stream'], bw['numpy']):.1f} GB/s / 8 B)")
    print("in-cache ceiling: one stencil pass (shifted slices, zero ghosts), by working set")
    for mib in (0.5, 2, 8, 32, 64):
        rate = in_cache_ceiling(mib * 2**20 / 4, repeat)
        print(f"  {mib:5.1f} MiB  {rate:9.2e}  {100 * rate / roof:5.1f}% of roofline")
    c = initial(n)
    ref = None
    print(f"{n}³, {steps} sub-steps per call")
    for name, fn in variants(steps, list(blocks)).items():
        f = jax.jit(fn)
        out = f(c)
        out.block_until_ready()
        ref = out if ref is None else ref
        err = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
        if err > 1e-5:
            raise AssertionError(f"{name} differs from the library step by {err:.1e}")
        rate = n**3 * steps / best_time(lambda f=f: f(c).block_until_ready(), repeat)
        print(f"  {name:20s} {rate:9.2e}  {100 * rate / roof:5.1f}% of roofline  (max rel diff {err:.1e})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=256, help="cube edge (voxels)")
    p.add_argument("--steps", type=int, default=16, help="sub-steps per call (a multiple of 2K)")
    p.add_argument("--blocks", default="32x4,32x8,64x8", help="comma-separated bxK slab sizes and depths")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    blocks = tuple(tuple(int(v) for v in s.split("x")) for s in a.blocks.split(","))
    run(a.n, a.steps, blocks, a.repeat)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
