"""Inference costs: an I2 fit's wall time, gradient ÷ forward cost, checkpointing vs reverse-mode memory.

1. I2 (VERIFICATION.md): O3 time course, D = 0.1 µm²/s, k = 2.52e-4 /s, snapshots
   0.5–8 h at 12 positions, 5 % log-normal noise, unknown scale, log residuals,
   1D grid of 160 voxels (1.25 µm), dt = 30 s (960 steps). Wall time of the
   first fit (includes compiling) and of a refit of new data with the same
   ``predict`` (compiled code reused).
2. Cost of derivatives relative to one forward evaluation of the same
   prediction, for 2 (D, k) and 3 (D, k, flux) parameters: ``jax.jacfwd`` of
   the residual vector (what ``jc.fit`` uses), the same Jacobian as P
   sequential ``jax.jvp`` calls, one ``jvp``, ``jax.grad`` of the scalar loss
   (reverse mode) and a ``jax.vjp`` pull-back. Interleaved rounds, best of 15;
   wall and process-CPU ratios.
3. Reverse-mode memory of ``jax.grad`` through a 3D 32³ grid × 200 steps for
   ``checkpoint=None | "step" | "sqrt"``: XLA's temporary buffer size from
   ``jax.jit(f).lower(...).compile().memory_analysis()`` and the measured
   gradient time.

4. The I2 posterior by NUTS (``jc.sample_posterior``, needs blackjax): 1,000 draws, wall time.

Runs in float64 (fits) on the default device. Usage::

    python scripts/bench_fit.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import erfc  # noqa: E402

import jaxcell as jc  # noqa: E402
from jaxcell.inference import fit  # noqa: E402

D, K = 0.10, 2.52e-4


def o3(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """O3: 1D formation from rest with unit inward flux at x = 0 (amount/µm)."""
    lam = np.sqrt(D / K)
    w, s = np.sqrt(4 * D * t), np.sqrt(K * t)
    return 1 / (2 * np.sqrt(D * K)) * (np.exp(-x / lam) * erfc(x / w - s) - np.exp(x / lam) * erfc(x / w + s))


def best_time(fn: Callable[..., Any], *args: Any, repeat: int = 7) -> tuple[float, float]:
    """Smallest wall time and smallest process CPU time (s, all threads) of ``repeat`` calls ``fn(*args)``
    (blocked on) after one warm-up call. On a shared machine the CPU time is the steadier measure of work."""
    jax.block_until_ready(fn(*args))
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.min(wall)), float(np.min(cpu))


def i2_problem() -> tuple[Callable[[dict], jax.Array], np.ndarray]:
    """I2's prediction (160 voxels of 1.25 µm, 960 steps of 30 s, 5 snapshots × 12 positions) and its exact O3 data."""
    grid = jc.Grid((160,), spacing=1.25)
    x_obs = np.arange(5.0, 61.0, 5.0)
    t_obs = np.array([0.5, 1.0, 2.0, 4.0, 8.0]) * 3600.0

    def predict(p: dict) -> jax.Array:
        m = jc.Model(grid, [jc.Substrate("Dpp", diffusion=p["D"], decay=p["k"], boundary={"x-": jc.Flux(1.0)})])
        _, tr = jc.simulate(m, m.init(), t_end=float(t_obs[-1]), dt=30.0, save_at=t_obs)
        return grid.sample(tr.fields[:, 0], x_obs[:, None])

    return predict, o3(x_obs[None, :], t_obs[:, None])


def bench_i2() -> None:
    predict, exact = i2_problem()
    print("1. I2 fit (160 voxels, 960 steps of 30 s, 5 × 12 observations, 2 parameters + scale)")
    for label, seed in (("first fit (compiles)", 0), ("refit, new noise    ", 1)):
        obs = 2.0 * exact * np.exp(0.05 * np.random.default_rng(seed).standard_normal(exact.shape))
        t0 = time.perf_counter()
        res = fit(predict, obs, {"D": 0.05, "k": 1e-4}, nuisance="scale", noise="multiplicative")
        wall = time.perf_counter() - t0
        print(f"   {label}: {wall:6.2f} s, {res.iterations} LM iterations, converged={res.converged}; "
              f"D = {res.params['D']:.4f} (±{100 * res.stderr['D']:.1f}%), "
              f"k = {res.params['k']:.3e} (±{100 * res.stderr['k']:.1f}%)")


def _jvp_variants(resid: Callable[[jax.Array], jax.Array], p: int) -> tuple[Callable, Callable]:
    """Jitted ``theta -> one jvp column`` and ``theta -> (n, p) Jacobian from p sequential jvps``."""
    eye = jnp.eye(p)

    def col(t: jax.Array, e: jax.Array) -> jax.Array:
        return jax.jvp(resid, (t,), (e,))[1]

    return jax.jit(lambda t: col(t, eye[0])), jax.jit(lambda t: jax.lax.map(lambda e: col(t, e), eye).T)


def bench_derivatives() -> None:
    grid = jc.Grid((160,), spacing=1.25)
    x_obs = np.arange(5.0, 61.0, 5.0)[:, None]
    t_obs = np.array([0.5, 1.0, 2.0, 4.0, 8.0]) * 3600.0
    print("2. derivative cost ÷ one forward evaluation (same I2 prediction, 60 outputs)")
    for names in (("D", "k"), ("D", "k", "j")):
        def resid(theta: jax.Array, names: tuple = names) -> jax.Array:
            p = dict(zip(names, jnp.exp(theta), strict=True))
            m = jc.Model(grid, [jc.Substrate("Dpp", diffusion=p["D"], decay=p["k"],
                                             boundary={"x-": jc.Flux(p.get("j", 1.0))})])
            _, tr = jc.simulate(m, m.init(), t_end=float(t_obs[-1]), dt=30.0, save_at=t_obs)
            return grid.sample(tr.fields[:, 0], x_obs).reshape(-1)

        theta = jnp.log(jnp.array([D, K, 1.0][: len(names)]))
        fwd = jax.jit(resid)
        jf = jax.jit(jax.jacfwd(resid))
        gr = jax.jit(jax.grad(lambda t: 0.5 * jnp.sum(resid(t) ** 2)))

        @jax.jit
        def vjp(t: jax.Array) -> jax.Array:
            y, pull = jax.vjp(resid, t)
            return pull(y)[0]

        one_jvp, seq_jvp = _jvp_variants(resid, len(names))
        fns = {"forward": fwd, "jacfwd (full J, vmapped tangents)": jf, "P jvps in sequence (lax.map)": seq_jvp,
               "one jvp": one_jvp, "grad (reverse)": gr, "vjp (one pull-back)": vjp}
        best = {k: (np.inf, np.inf) for k in fns}
        for _ in range(15):  # interleaved rounds: load changes on a shared machine hit every variant alike
            for k, f in fns.items():
                w, c = best_time(f, theta, repeat=1)
                best[k] = (min(best[k][0], w), min(best[k][1], c))
        base = best.pop("forward")
        print(f"   P = {len(names)}: forward {1e3 * base[0]:.1f} ms wall, {1e3 * base[1]:.1f} ms CPU")
        for k, v in best.items():
            print(f"      {k:34s} {v[0] / base[0]:5.1f}× wall {v[1] / base[1]:5.1f}× CPU")


def bench_checkpoint_memory() -> None:
    grid = jc.Grid((32, 32, 32), spacing=5.0)
    xyz = np.stack(grid.mesh(), -1)
    blob = np.exp(-np.sum((xyz - 80.0) ** 2, axis=-1) / (2 * 20.0**2))
    print("3. reverse-mode memory, jax.grad through 32³ × 200 steps (implicit, float64):")
    field_mb = blob.size * 8 / 2**20
    for ck in (None, "step", "sqrt"):
        def loss(theta: jax.Array, ck: str | None = ck) -> jax.Array:
            m = jc.Model(grid, [jc.Substrate("s", diffusion=jnp.exp(theta[0]), decay=jnp.exp(theta[1]),
                                             boundary={"x-": jc.Flux(0.1)})])
            st, _ = jc.simulate(m, m.init(fields=blob[None]), t_end=200.0, dt=1.0, checkpoint=ck)
            return jnp.sum(st.fields**2)

        g = jax.jit(jax.grad(loss))
        theta = jnp.log(jnp.array([10.0, 1e-3]))
        t0 = time.perf_counter()
        compiled = g.lower(theta).compile()
        t_comp = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        temp = getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20 if mem is not None else float("nan")
        t_run = best_time(compiled, theta, repeat=3)[0]
        print(f"   checkpoint={ck!s:5}: temp {temp:8.1f} MiB (= {temp / field_mb:6.1f} fields of "
              f"{field_mb:.2f} MiB), gradient {t_run:.2f} s, compile {t_comp:.1f} s")


def bench_posterior() -> None:
    """4. The I2 posterior by NUTS: 1,000 draws (2 chains × 500 after 150 warm-up steps each), wall time
    including the least-squares start and compiling."""
    predict, exact = i2_problem()
    obs = 2.0 * exact * np.exp(0.05 * np.random.default_rng(0).standard_normal(exact.shape))
    t0 = time.perf_counter()
    post = jc.sample_posterior(predict, obs, {"D": 0.05, "k": 1e-4}, nuisance="scale", noise="multiplicative",
                               num_warmup=150, num_samples=500, num_chains=2, key=jax.random.key(0))
    wall = time.perf_counter() - t0
    s = post.summary()
    print(f"4. I2 posterior, 1,000 NUTS draws (2 chains x 500, 150 warm-up each): {wall:.1f} s; "
          f"D = {s['D']['mean']:.4f} ± {s['D']['sd']:.4f}, k = {s['k']['mean']:.3e} ± {s['k']['sd']:.2e}, "
          f"ESS(D) {s['D']['ess']:.0f}, R-hat {s['D']['rhat']:.3f}, divergences {int(post.divergences.sum())}")


def main() -> None:
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    bench_i2()
    bench_derivatives()
    bench_checkpoint_memory()
    bench_posterior()


if __name__ == "__main__":
    main()
