"""Grid geometry (jaxcell/grid.py): sampling between voxel centres, exact for linear fields."""

import numpy as np
import pytest

import jaxcell as jc


def test_sample_is_exact_for_linear_fields_and_constant_near_faces():
    grid = jc.Grid((6, 5, 4), (2.0, 3.0, 1.5), origin=(-1.0, 2.0, 0.5))
    X = grid.mesh()
    coef = np.array([0.3, -1.2, 2.5])
    field = 4.0 + sum(c * x for c, x in zip(coef, X))
    rng = np.random.default_rng(3)
    lo = np.array([grid.centers(a)[0] for a in range(3)])
    hi = np.array([grid.centers(a)[-1] for a in range(3)])
    pts = rng.uniform(lo, hi, (50, 3))
    np.testing.assert_allclose(np.asarray(grid.sample(field, pts)), 4.0 + pts @ coef, rtol=1e-13)
    # batched leading axes: (T, S, *shape) -> (T, S, M)
    stack = np.stack([field, 2 * field])[None]
    assert grid.sample(stack, pts).shape == (1, 2, 50)
    # between the outermost centre and the face the value is held constant (per axis)
    origin, top = np.array(grid.origin), np.array(grid.origin) + np.array(grid.extent)
    inner = np.array([lo, hi])
    faces = np.array([origin, top])
    for a in range(3):
        for end in (0, 1):
            p_face = (lo + hi) / 2
            p_centre = p_face.copy()
            p_face[a], p_centre[a] = faces[end, a], inner[end, a]
            v = np.asarray(grid.sample(field, np.stack([p_face, p_centre])))
            assert v[0] == pytest.approx(v[1], rel=1e-14)
    g1 = jc.Grid((4,), 10.0)
    v = np.asarray(g1.sample(np.array([1.0, 3.0, 7.0, 8.0]), np.array([[0.0], [5.0], [10.0], [15.0], [40.0]])))
    np.testing.assert_allclose(v, [1.0, 1.0, 2.0, 3.0, 8.0])


def test_sample_rejects_points_outside_and_misshapen_input():
    grid = jc.Grid((4, 4), 1.0)
    f = np.zeros((4, 4))
    with pytest.raises(ValueError, match="outside the domain"):
        grid.sample(f, np.array([[4.5, 1.0]]))
    with pytest.raises(ValueError, match="outside the domain"):
        grid.sample(f, np.array([[1.0, -0.01]]))
    with pytest.raises(ValueError, match="NaN"):
        grid.sample(f, np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(M, 2\)"):
        grid.sample(f, np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="grid shape"):
        grid.sample(np.zeros((4, 5)), np.array([[1.0, 1.0]]))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("spacing", [1e-30, 1e-5, 1e9])
def test_spacing_that_float32_cannot_carry_is_refused(spacing):
    """1e-30 µm gave all-NaN fields (D/h² overflows float32): refused with the unit hint."""
    with pytest.raises(ValueError, match=r"spacing must lie in \[0.0001, 1e\+07\] µm.*unit slip"):
        jc.Grid((4,), spacing)
