"""Signal → behaviour rules (jaxcell/behaviour.py) against PhysiCell's formula and process statistics.

Oracles: PhysiCell's Hypothesis_Rule combination written out in NumPy; the
survival exp(−r·t) of a death rate; the mean (2 − e^{−r·dt})^n of a
discrete-time Yule process; a displacement v·t along a fixed gradient; the mean
squared displacement n·(s·dt)² of a walk with fixed step length; central
finite differences for gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcell as jc
from jaxcell._node import replace
from jaxcell.step import Env


def env_of(conc, names, dt=1.0, ndim=2, key=0):
    conc = jnp.asarray(conc, jnp.float64)
    n, s = conc.shape
    return Env(concentration=conc, gradient=jnp.zeros((n, s, ndim)), key=jax.random.key(key),
               dt=jnp.asarray(dt), names=tuple(names))


def physicell(b0, ups, downs, up_max, down_min):
    """PhysiCell's Hypothesis_Rule::evaluate: ups/downs are lists of (x, K, n)."""
    su = sum((x / k) ** n for x, k, n in ups) if ups else 0.0
    u = b0 + (up_max - b0) * su / (1 + su)
    sd = sum((x / k) ** n for x, k, n in downs) if downs else 0.0
    return u + (down_min - u) * sd / (1 + sd)


def test_rules_combine_as_physicell():
    """Two up-signals and one down-signal on secretion; a type-specific rule leaves other types alone."""
    rng = np.random.default_rng(1)
    n = 40
    conc = rng.uniform(0, 3, (n, 3))
    types = np.arange(n) % 2
    base_sec = rng.uniform(0.1, 0.5, (n, 3))
    cells = jc.Cells(rng.uniform(0, 100, (n, 2)), secretion=base_sec, type=types)
    names = ("a", "b", "out")
    rs = [jc.Rule("a", "concentration", "secretion:out", "up", max=5.0, K=1.2, n=2.0),
          jc.Rule("b", "concentration", "secretion:out", "up", max=5.0, K=0.7, n=1.5),
          jc.Rule("out", "concentration", "secretion:out", "down", max=0.05, K=2.0, n=3.0),
          jc.Rule("a", "concentration", "uptake:a", "up", max=7.0, K=1.0, n=1.0, cell_type=1)]
    beh = jc.rules(rs)
    model = jc.Model(jc.Grid((10, 10), 10.0), [jc.Substrate(s, 1.0) for s in names])
    cells = beh.prepare(cells.conform(model.grid, 3), model)
    new = beh(cells, env_of(conc, names), 0.0)
    want = np.array([physicell(base_sec[i, 2], [(conc[i, 0], 1.2, 2.0), (conc[i, 1], 0.7, 1.5)],
                               [(conc[i, 2], 2.0, 3.0)], 5.0, 0.05) for i in range(n)])
    np.testing.assert_allclose(np.asarray(new.secretion[:, 2]), want, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(new.secretion[:, :2]), base_sec[:, :2])
    up = np.asarray(new.uptake[:, 0])
    np.testing.assert_allclose(up[types == 1], 7.0 * conc[types == 1, 0] / (1 + conc[types == 1, 0]), rtol=1e-12)
    np.testing.assert_array_equal(up[types == 0], 0.0)
    # the base stays what the cells had at the start, so a second call gives the same rates
    again = beh(new, env_of(conc, names), 1.0)
    np.testing.assert_array_equal(np.asarray(again.secretion), np.asarray(new.secretion))


def test_saturation_rate_rule_regulates_biofvm_secretion():
    """``saturation_rate:<s>`` (PhysiCell's "<s> secretion"): Hill down-regulation from each cell's own
    rate towards ``max``; the target density and the other rates are left alone."""
    rng = np.random.default_rng(2)
    n = 30
    conc = rng.uniform(0, 4, (n, 2))
    base = rng.uniform(1.0, 3.0, (n, 2))
    cells = jc.Cells(rng.uniform(0, 100, (n, 2)), saturation=0.7, saturation_rate=base, uptake=0.4)
    names = ("o2", "chemokine")
    beh = jc.rules([jc.Rule("o2", "concentration", "saturation_rate:chemokine", "down", max=0.2, K=1.5, n=2.0)])
    model = jc.Model(jc.Grid((10, 10), 10.0), [jc.Substrate(s, 1.0) for s in names])
    cells = beh.prepare(cells.conform(model.grid, 2), model)
    new = beh(cells, env_of(conc, names), 0.0)
    want = [physicell(base[i, 1], [], [(conc[i, 0], 1.5, 2.0)], 0.0, 0.2) for i in range(n)]
    np.testing.assert_allclose(np.asarray(new.saturation_rate[:, 1]), want, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(new.saturation_rate[:, 0]), base[:, 0])
    np.testing.assert_array_equal(np.asarray(new.saturation), 0.7)
    np.testing.assert_array_equal(np.asarray(new.uptake), 0.4)


def lattice(n, lo, hi, ndim=2):
    side = int(np.ceil(n ** (1 / ndim)))
    g = np.linspace(lo, hi, side)
    pts = np.stack(np.meshgrid(*([g] * ndim), indexing="ij"), -1).reshape(-1, ndim)
    return pts[:n]


def test_death_rate_gives_exponential_survival():
    """4000 cells with death rate 1e-3/s for 500 s: survival e^{-0.5} within 4 binomial sd."""
    model = jc.Model(jc.Grid((8, 8), 25.0), [jc.Substrate("s", 100.0)], solver="explicit")
    n = 4000
    cells = jc.Cells(lattice(n, 5, 195), alive=np.ones(n, bool))
    beh = jc.rules([], base={"death": 1e-3})
    state, _ = jc.simulate(model, model.init(cells), t_end=500.0, dt=10.0, behaviour=beh, seed=3)
    p = np.exp(-0.5)
    frac = float(np.mean(np.asarray(state.cells.alive)))
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_division_rate_grows_as_a_yule_process():
    """1000 mothers, 1e-3/s for 300 steps of 1 s: mean N0·(2 − e^{-r dt})^300, Yule sd; capacity never full."""
    model = jc.Model(jc.Grid((8, 8), 25.0), [jc.Substrate("s", 100.0)], solver="explicit")
    n0, cap, r = 1000, 4000, 1e-3
    cells = jc.Cells(lattice(cap, 10, 190), alive=np.arange(cap) < n0, volume=100.0)
    beh = jc.rules([], base={"division": r})
    state, _ = jc.simulate(model, model.init(cells), t_end=300.0, dt=1.0, behaviour=beh, seed=5)
    count = int(np.sum(np.asarray(state.cells.alive)))
    mean = n0 * (2 - np.exp(-r)) ** 300
    sd = np.sqrt(n0 * np.exp(0.3) * (np.exp(0.3) - 1))
    assert abs(count - mean) < 4 * sd
    assert count > n0 + 200  # the growth is real, not noise
    # daughters inherit the base rate
    np.testing.assert_array_equal(np.asarray(state.cells.base["division"])[np.asarray(state.cells.alive)], r)


def gradient_model(ndim=2):
    """A linear profile held by Dirichlet faces 0 at x = 0 and 1 at x = 200 µm: gradient 1/200 per µm."""
    grid = jc.Grid((20,) * ndim, 10.0)
    faces = {"x-": jc.Dirichlet(0.0), "x+": jc.Dirichlet(1.0)}
    model = jc.Model(grid, [jc.Substrate("attractant", 100.0, boundary=faces)], solver="implicit")
    x = (np.arange(20) + 0.5) * 10.0
    # the discrete steady state: linear through the half-voxel ghost faces
    field = np.broadcast_to(x.reshape((20,) + (1,) * (ndim - 1)) / 200.0, grid.shape).copy()
    return model, field


def test_chemotaxis_moves_cells_up_the_gradient_at_its_speed():
    """Base chemotaxis 0.1 µm/s for 300 s: every cell moves 30 µm in +x and not in y."""
    model, field = gradient_model()
    pos = np.stack([np.full(10, 40.0), np.linspace(20, 180, 10)], 1)
    cells = jc.Cells(pos)
    beh = jc.rules([], base={"chemotaxis:attractant": 0.1})
    state, _ = jc.simulate(model, model.init(cells, fields=field), t_end=300.0, dt=1.0, behaviour=beh)
    np.testing.assert_allclose(np.asarray(state.cells.position) - pos, [[30.0, 0.0]] * 10, atol=1e-9)


def test_chemotaxis_rule_speed_follows_the_hill_factor():
    """Chemotaxis up-regulated by the attractant itself: dx/dt = vmax·c/(K + c) with c = x/200.

    Solved in closed form by separation: t = (K·200·ln(x/x0) + (x − x0))/vmax; the
    step's forward-Euler drift is within O(dt) of it.
    """
    model, field = gradient_model()
    vmax, K = 0.2, 0.25
    cells = jc.Cells(np.array([[50.0, 100.0]]))
    beh = jc.rules([jc.Rule("attractant", "concentration", "chemotaxis:attractant", "up", max=vmax, K=K, n=1.0)])
    state, _ = jc.simulate(model, model.init(cells, fields=field), t_end=400.0, dt=0.5, behaviour=beh)
    x = float(state.cells.position[0, 0])
    t_exact = (K * 200 * np.log(x / 50.0) + (x - 50.0)) / vmax
    # the cell senses its voxel centre ("nearest"): 0.15 % off the continuous drift here
    assert t_exact == pytest.approx(400.0, rel=0.01)
    assert x - 50.0 > 40.0  # it moved a long way, so the check above has power


def test_random_motility_steps_have_the_speed_and_the_walk_spreads():
    """speed 0.5 µm/s, dt 2 s: each step is exactly 1 µm long; after 100 steps the MSD is 100 µm²."""
    grid = jc.Grid((10, 10), 1000.0)  # 10 mm: no cell reaches a face
    model = jc.Model(grid, [jc.Substrate("s", 100.0)], solver="explicit")
    n = 3000
    pos = np.full((n, 2), 5000.0)
    beh = jc.rules([], base={"speed": 0.5})
    one, _ = jc.simulate(model, model.init(jc.Cells(pos)), t_end=2.0, dt=2.0, behaviour=beh)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(one.cells.position) - pos, axis=1), 1.0, rtol=1e-12)
    state, _ = jc.simulate(model, model.init(jc.Cells(pos)), t_end=200.0, dt=2.0, behaviour=beh, seed=1)
    msd = float(np.mean(np.sum((np.asarray(state.cells.position) - pos) ** 2, axis=1)))
    # 2D walk of 100 unit steps: |X|² has mean 100 and sd ≈ 100 (exponential-like), so the mean over 3000 has sd ≈ 1.8
    assert msd == pytest.approx(100.0, abs=4 * 100 / np.sqrt(n))


def test_two_runs_continue_one_run_bitwise():
    """Base values and random keys live in the state: 0→50→100 s equals 0→100 s, bit for bit."""
    model = jc.Model(jc.Grid((12, 12), 10.0), [jc.Substrate("s", 50.0, decay=1e-3)], solver="explicit")
    n = 200
    cells = jc.Cells(lattice(n, 5, 115), secretion=0.5, alive=np.arange(n) < 60)
    beh = jc.rules([jc.Rule("s", "concentration", "division", "up", max=5e-3, K=0.05, n=2.0),
                    jc.Rule("s", "concentration", "secretion:s", "down", max=0.0, K=0.1, n=1.0)],
                   base={"speed": 0.2, "death": 5e-4})
    s0 = model.init(cells)
    whole, _ = jc.simulate(model, s0, t_end=100.0, dt=1.0, behaviour=beh, seed=9)
    half, _ = jc.simulate(model, s0, t_end=50.0, dt=1.0, behaviour=beh, seed=9)
    # the second call sees the base recorded by the first, not today's secretion
    half, _ = jc.simulate(model, half, t_end=100.0, dt=1.0, behaviour=beh, seed=9)
    for a, b in zip(jax.tree_util.tree_leaves(whole.cells), jax.tree_util.tree_leaves(half.cells)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(whole.fields), np.asarray(half.fields))
    assert abs(float(jc.budget(whole)["residual"][0])) < 1e-9 * float(jc.budget(whole)["secreted"][0])


def test_gradient_through_a_rule_matches_finite_differences():
    """d(secreted)/d(max) of a concentration-driven secretion rule vs central differences."""
    model = jc.Model(jc.Grid((6,), 10.0), [jc.Substrate("s", 10.0, decay=1e-2)], solver="implicit")
    cells = jc.Cells(np.array([[15.0], [35.0]]), secretion=0.1)
    state0 = model.init(cells, fields=np.full((6,), 0.2))

    def secreted(vmax):
        beh = jc.rules([jc.Rule("s", "concentration", "secretion:s", "up", max=vmax, K=0.3, n=2.0)])
        state, _ = jc.simulate(model, state0, t_end=50.0, dt=1.0, behaviour=beh)
        return jc.budget(state)["secreted"][0]

    g = float(jax.grad(secreted)(1.0))
    h = 1e-5
    fd = (float(secreted(1.0 + h)) - float(secreted(1.0 - h))) / (2 * h)
    assert g == pytest.approx(fd, rel=1e-6)
    assert g > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"behaviour": "growth"}, "Rule.behaviour must be one of"),
    ({"behaviour": "secretion"}, "Rule.behaviour must be one of"),
    ({"kind": "amount"}, "Rule.kind"),
    ({"direction": "sideways"}, "Rule.direction"),
    ({"K": 0.0}, "Rule.K must be > 0"),
    ({"n": -1.0}, "Rule.n"),
    ({"max": "5"}, "Rule.max must be a number"),
    ({"cell_type": -1}, "Rule.cell_type"),
])
def test_bad_rules_are_refused(kwargs, match):
    args = {"signal": "s", "kind": "concentration", "behaviour": "division", "direction": "up", "max": 1.0,
            "K": 1.0, "n": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        jc.Rule(**args)


def test_rules_are_checked_against_the_model_and_each_other():
    model = jc.Model(jc.Grid((4,), 10.0), [jc.Substrate("s", 1.0)])
    cells = jc.Cells(np.array([[5.0]]))
    with pytest.raises(ValueError, match="'oxygen' .* is no substrate"):
        jc.simulate(model, model.init(cells), 1.0, 1.0,
                    behaviour=jc.rules([jc.Rule("oxygen", behaviour="death", max=1e-3)]))
    with pytest.raises(ValueError, match="kind='bound' needs cells with receptors"):
        jc.simulate(model, model.init(cells), 1.0, 1.0,
                    behaviour=jc.rules([jc.Rule("s", "bound", "death", max=1e-3)]))
    with pytest.raises(ValueError, match="different max"):
        jc.rules([jc.Rule("s", behaviour="death", max=1e-3), jc.Rule("s", behaviour="death", max=2e-3)])
    with pytest.raises(ValueError, match="per-type values"):
        jc.simulate(model, model.init(replace(cells, type=jnp.array([2], jnp.int32))), 1.0, 1.0,
                    behaviour=jc.rules([], base={"death": [1e-3, 0.0]}))
    with pytest.raises(ValueError, match="rules base"):
        jc.rules([], base={"speed": -1.0})


def test_gradient_is_finite_where_the_signal_is_flat():
    """Cells in a flat field have no chemotaxis direction; |∇c| at 0 must not put NaN into grad.

    One cell in a flat field, one on a linear ramp ("linear" coupling, so uptake varies with
    position): d(uptake)/d(vmax) is finite and equals central differences.
    """
    grid = jc.Grid((20,), 10.0)
    model = jc.Model(grid, [jc.Substrate("s", 1e-3)], solver="implicit", coupling="linear")
    x = (np.arange(20) + 0.5) * 10.0
    field = np.where(x < 100, 1.0, 1.0 + (x - 100) / 100)  # flat, then a ramp
    # off-centre start and speed: a cell sitting exactly on a voxel centre (a kink of the
    # linear weights) at a step would make the finite difference straddle the kink
    cells = jc.Cells(np.array([[30.0], [141.37]]), uptake=1.0)
    state0 = model.init(cells, fields=field)

    def taken(vmax):
        beh = jc.rules([], base={"chemotaxis:s": vmax})
        state, _ = jc.simulate(model, state0, t_end=100.0, dt=1.0, behaviour=beh)
        return jc.budget(state)["uptake"][0]

    g = float(jax.grad(taken)(0.0913))
    fd = (float(taken(0.0913 + 1e-6)) - float(taken(0.0913 - 1e-6))) / 2e-6
    assert np.isfinite(g)
    assert g == pytest.approx(fd, rel=1e-5)
    assert g > 0  # moving up the ramp meets more ligand


def test_hill_sum_far_beyond_saturation_gives_max_not_nan():
    """(x/K)^n that overflows even float64 (1e12^30): the factor is 1, the rate is max, nothing is NaN."""
    model = jc.Model(jc.Grid((6,), 10.0), [jc.Substrate("s", 10.0, decay=1e-2)], solver="implicit")
    cells = jc.Cells(np.array([[25.0]]), secretion=0.5)
    beh = jc.rules([jc.Rule("s", "concentration", "secretion:s", "up", max=3.0, K=1e-12, n=30.0)])
    state, _ = jc.simulate(model, model.init(cells, fields=np.full((6,), 1.0)), t_end=5.0, dt=1.0, behaviour=beh)
    assert float(state.cells.secretion[0, 0]) == 3.0
    assert np.all(np.isfinite(np.asarray(state.fields)))


def test_an_explicit_base_table_takes_effect_on_every_call():
    """A later call with another base= table uses it (it is written into Cells.base each call)."""
    model = jc.Model(jc.Grid((8,), 10.0), [jc.Substrate("s", 10.0)], solver="explicit")
    cells = jc.Cells(lattice(200, 1, 79, ndim=1))
    s1, _ = jc.simulate(model, model.init(cells), t_end=10.0, dt=1.0, behaviour=jc.rules([], base={"death": 0.0}))
    assert bool(np.all(np.asarray(s1.cells.alive)))
    s2, _ = jc.simulate(model, s1, t_end=20.0, dt=1.0, behaviour=jc.rules([], base={"death": 10.0}))
    # P(survive 10 steps) = e^-100: none left
    assert not np.any(np.asarray(s2.cells.alive))


def test_death_and_division_are_independent_with_their_probabilities():
    """Both at rate r for one step, drawn independently (a dying cell does not divide): each cell leaves
    0 (p), 1 ((1−p)²) or 2 ((1−p)p) live cells, p = 1 − e^{−r dt}: mean (1−p)(1+p), 4 sd.

    One uniform deciding "death, else division" would leave 1 per cell on average instead.
    """
    model = jc.Model(jc.Grid((10, 10), 20.0), [jc.Substrate("s", 10.0)], solver="explicit")
    n = 20000
    cells = jc.Cells(lattice(2 * n, 5, 195), alive=np.arange(2 * n) < n, volume=1.0)
    r, dt = 0.5, 1.0
    state, _ = jc.simulate(model, model.init(cells), t_end=dt, dt=dt, seed=11,
                           behaviour=jc.rules([], base={"death": r, "division": r}))
    p = 1 - np.exp(-r * dt)
    mean = (1 - p) * (1 + p)
    var = (1 - p) ** 2 + 4 * (1 - p) * p - mean**2
    per_cell = np.asarray(state.cells.alive).sum() / n
    assert abs(per_cell - mean) < 4 * np.sqrt(var / n)


def test_small_probabilities_are_not_rounded():
    """The integer threshold keeps p = 8.8e-7 to 2^-32 (a float32 uniform would round it up by 8 %)."""
    from jaxcell.behaviour import _threshold

    for p in (8.8e-7, 1e-7, 0.3, 1.0 - 1e-6):
        got = int(_threshold(jnp.asarray(p))) / 2.0**32
        assert abs(got - p) <= 2.0**-32 + p * 2.0**-23, p


@pytest.mark.parametrize("ndim", [2, 3])
def test_random_directions_are_unit_and_uniform(ndim):
    """Unit length; on the circle the angle, on the sphere z and the azimuth, are uniform (χ², 10 bins)."""
    from jaxcell.cells import random_direction

    n = 50000
    u = np.asarray(random_direction(jax.random.key(4), n, ndim, jnp.float64))
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-12)
    samples = [np.arctan2(u[:, 1], u[:, 0])]
    if ndim == 3:
        samples.append(u[:, 2])
    for x in samples:
        counts, _ = np.histogram(x, bins=10)
        chi2 = np.sum((counts - n / 10) ** 2 / (n / 10))
        assert chi2 < 27.9  # 99.9 % quantile of χ² with 9 degrees of freedom
    np.testing.assert_allclose(u.mean(axis=0), 0.0, atol=4 / np.sqrt(n))


def test_rules_and_responses_on_one_rate_are_refused():
    model = jc.Model(jc.Grid((4,), 10.0), [jc.Substrate("s", 1.0)],
                     responses=[jc.Response("s", "s", max=1.0, K=1.0, kind="concentration")])
    cells = jc.Cells(np.array([[5.0]]))
    beh = jc.rules([jc.Rule("s", "concentration", "secretion:s", "down", max=0.0, K=1.0)])
    with pytest.raises(ValueError, match="would both set that rate"):
        jc.simulate(model, model.init(cells), 1.0, 1.0, behaviour=beh)


def test_per_type_base_table_works_under_jit_and_base_keys_are_checked():
    model = jc.Model(jc.Grid((8,), 10.0), [jc.Substrate("s", 10.0)], solver="explicit")
    cells = jc.Cells(np.array([[15.0], [45.0]]), type=np.array([0, 1]))
    beh = jc.rules([], base={"speed": [0.0, 1.0]})
    moved = jax.jit(lambda s: jc.simulate(model, s, 5.0, 1.0, behaviour=beh)[0].cells.position)(model.init(cells))
    np.testing.assert_allclose(np.abs(np.asarray(moved)[:, 0] - [15.0, 45.0]), [0.0, 5.0], atol=1e-9)
    with pytest.raises(ValueError, match="'sped' that is no behaviour"):
        jc.simulate(model, model.init(jc.Cells(np.array([[15.0]]), base={"sped": 1.0})), 1.0, 1.0,
                    behaviour=beh)


def test_vmap_over_a_rule_parameter_gives_each_speed():
    """jax.vmap over the chemotactic speed through jc.simulate: each member moves v·t up a fixed gradient."""
    model, field = gradient_model()
    cells = jc.Cells(np.array([[40.0, 100.0]]))
    state0 = model.init(cells, fields=field)

    def x_end(v):
        beh = jc.rules([], base={"chemotaxis:attractant": v})
        state, _ = jc.simulate(model, state0, t_end=200.0, dt=2.0, behaviour=beh)
        return state.cells.position[0, 0]

    speeds = jnp.array([0.05, 0.1, 0.2])
    np.testing.assert_allclose(np.asarray(jax.vmap(x_end)(speeds)), 40.0 + 200.0 * np.asarray(speeds), atol=1e-9)
