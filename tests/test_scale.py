"""Sharded runs equal single-device runs; vmap ensembles equal loops (4 forced CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcell as jc


def _problem(solver: str):
    grid = jc.Grid((8, 6, 5), 4.0)
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 1, (20, 3)) * np.array(grid.extent)
    rec = jc.Receptors(total=50.0, kon=0.05, koff=1e-2, kint=1e-3)
    cells = jc.Cells(pos, secretion=rng.uniform(0, 2, 20), uptake=1.0, receptors=rec)
    boundary = {"x-": jc.Flux(0.2)}
    model = jc.Model(grid, [jc.Substrate("s", 2.0, 1e-3, boundary=boundary)], solver=solver)
    return model, model.init(cells, fields=rng.uniform(0, 1, (1,) + grid.shape))


@pytest.mark.parametrize("solver", ["implicit", "lod", "explicit", "spectral"])
@pytest.mark.parametrize("make_mesh", ["make_mesh", "Mesh"])
def test_sharded_equals_single_device(solver, make_mesh):
    assert jax.device_count() >= 4
    model, state = _problem(solver)
    ref, ref_traj = jc.simulate(model, state, t_end=20.0, dt=2.0, save_every=10.0)
    if make_mesh == "make_mesh":
        mesh = jax.make_mesh((4,), ("x",))
    else:
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("x",))
    sharded = jc.shard(state, mesh)
    assert len(sharded.fields.sharding.device_set) == 4
    out, traj = jc.simulate(model, sharded, t_end=20.0, dt=2.0, save_every=10.0)
    np.testing.assert_allclose(np.asarray(out.fields), np.asarray(ref.fields), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(traj.fields), np.asarray(ref_traj.fields), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(out.cells.receptors.bound), np.asarray(ref.cells.receptors.bound),
                               rtol=1e-12)


@pytest.mark.parametrize("solver, needs", [("explicit", "collective-permute"), ("implicit", "all-to-all"),
                                           ("lod", "all-to-all"), ("spectral", "all-to-all")])
def test_sharded_step_never_gathers_the_field(solver, needs):
    """Each device holds 1/4 of the field throughout a step: halos for the stencil, all-to-all
    transposes for the line solves and transforms along the split axis, never an all-gather."""
    from jaxcell.simulate import run_steps, schedule

    grid = jc.Grid((16, 16, 8), 4.0)
    pos = np.random.default_rng(0).uniform(0, 1, (30, 3)) * np.array(grid.extent)
    model = jc.Model(grid, [jc.Substrate("s", 2.0, 1e-3, boundary={"x-": jc.Flux(0.2), "y+": jc.Flux(0.1)})],
                     solver=solver)
    state = jc.shard(model.init(jc.Cells(pos, secretion=1.0, uptake=0.5)), jax.make_mesh((4,), ("x",)))
    hlo = run_steps.lower(model, state.fields, state.cells, state.totals, state.t, state.steps, dt=1.0,
                          groups=schedule(0.0, 4.0, 1.0, []), plan=model.scheme.plan(model, 1.0), checkpoint=None,
                          save_cells=False, sharding=state.sharding).compile().as_text()
    assert needs in hlo
    assert "all-gather" not in hlo


@pytest.mark.parametrize("faces", ["y", "xy"])
def test_sharded_spectral_with_periodic_axes_equals_single_device(faces):
    """FFT axes beside the split one: the transforms along axes 1, 2 must stay in the stored layout."""
    grid = jc.Grid((8, 12, 6), 10.0)
    model = jc.Model(grid, [jc.Substrate("a", 30.0, 1e-2, boundary={a: jc.Periodic() for a in faces})],
                     solver="spectral")
    state = model.init(fields=np.random.default_rng(0).random((1, 8, 12, 6)))
    ref, _ = jc.simulate(model, state, t_end=4.0, dt=2.0)
    out, _ = jc.simulate(model, jc.shard(state, jax.make_mesh((4,), ("x",))), t_end=4.0, dt=2.0)
    np.testing.assert_allclose(np.asarray(out.fields), np.asarray(ref.fields), rtol=1e-12, atol=1e-14)


def test_non_dividing_axis_is_padded_inside_simulate():
    """7 voxels over 4 devices: stored replicated, split (XLA pads) inside simulate, same numbers."""
    from jaxcell.simulate import run_steps, schedule

    grid = jc.Grid((7, 4), 2.0)
    model = jc.Model(grid, [jc.Substrate("s", 1.0, 1e-2, boundary={"x-": jc.Flux(0.5)})])
    state = model.init(fields=np.random.default_rng(1).uniform(0, 1, (1, 7, 4)))
    ref, _ = jc.simulate(model, state, t_end=5.0, dt=1.0)
    sharded = jc.shard(state, jax.make_mesh((4,), ("x",)))
    assert sharded.sharding is not None
    out, _ = jc.simulate(model, sharded, t_end=5.0, dt=1.0)
    np.testing.assert_allclose(np.asarray(out.fields), np.asarray(ref.fields), rtol=1e-12)
    hlo = run_steps.lower(model, sharded.fields, None, sharded.totals, sharded.t, sharded.steps, dt=1.0,
                          groups=schedule(0.0, 5.0, 1.0, []), plan=model.scheme.plan(model, 1.0), checkpoint=None,
                          save_cells=False, sharding=sharded.sharding).compile().as_text()
    assert any(op in hlo for op in ("collective-permute", "all-gather", "all-to-all", "all-reduce"))


def test_vmap_ensemble_equals_loop():
    """1000 members (D, k) vmapped through simulate equal the single runs."""
    grid = jc.Grid((16,), 2.0)
    x_obs = np.array([[3.0], [9.0], [20.0]])

    def run(D, k):
        model = jc.Model(grid, [jc.Substrate("s", D, k, boundary={"x-": jc.Flux(1.0)})])
        _, tr = jc.simulate(model, model.init(), t_end=50.0, dt=5.0, save_at=[25.0, 50.0])
        return grid.sample(tr.fields[:, 0], x_obs)

    rng = np.random.default_rng(2)
    D = jnp.asarray(rng.uniform(0.5, 2.0, 1000))
    k = jnp.asarray(rng.uniform(1e-3, 1e-2, 1000))
    batched = jax.jit(jax.vmap(run))(D, k)
    single = jax.jit(run)
    looped = np.stack([np.asarray(single(D[i], k[i])) for i in range(1000)])
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-12)
    assert batched.shape == (1000, 2, 3)


def test_stencil_benchmark_variants_equal_the_explicit_solver():
    """scripts/bench_stencil.py's ghost-layer and temporally blocked FTCS are the library's scheme.

    Oracle: jaxcell's explicit step and, independently, mass decaying as (1 + k·dt)⁻ⁿ
    under no-flux faces (diffusion conserves mass exactly; decay is backward Euler).
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import bench_stencil as bs

    steps = 8
    c = bs.initial(16, np.float64)
    runs = {name: np.asarray(f(c)) for name, f in bs.variants(steps, [(8, 2), (4, 4)]).items()}
    ref = runs.pop("library")
    mass = float(jnp.sum(c)) / (1 + bs.DECAY * bs.DT) ** steps
    np.testing.assert_allclose(ref.sum(), mass, rtol=1e-13)
    assert np.max(np.abs(ref - np.asarray(c))) > 1e-3  # the field did change
    for name, out in runs.items():
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-13, err_msg=name)
