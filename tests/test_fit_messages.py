"""jc.fit says why a prediction cannot be fitted: where it is <= 0 or not finite, and what to do."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest

import jaxcell as jc

x = np.linspace(0.0, 100.0, 21)
obs = 3.0 * np.exp(-x / 20.0)


def test_round_off_negative_prediction_is_explained() -> None:
    def predict(p):  # noqa: ANN001, ANN202
        y = 3.4 * jnp.exp(-x / p["lam"])
        return y.at[17].set(-1.2e-7)  # an undershoot of 1e-7 of the peak, as float32 solvers give

    with pytest.raises(ValueError) as e:
        jc.fit(predict, obs, {"lam": 10.0}, noise="multiplicative")
    msg = str(e.value)
    assert "predict returned a value <= 0 at index (17,)" in msg
    m = re.search(r"min (\S+) of a peak (\S+)\)", msg)
    assert m and float(m.group(1)) == pytest.approx(-1.2e-7) and float(m.group(2)) == pytest.approx(3.4)
    assert "round-off" in msg and "jnp.maximum(pred, tiny)" in msg and "noise='additive'" in msg
    assert "float64" in msg
    # the fix it names works: clipped, the same data fit to lam = 20
    res = jc.fit(lambda p: jnp.maximum(predict(p), 1e-30)[:17], obs[:17], {"lam": 10.0}, noise="multiplicative",
                 nuisance="scale")
    assert res.params["lam"] == pytest.approx(20.0, rel=1e-6)


def test_truly_non_positive_prediction_is_not_called_round_off() -> None:
    with pytest.raises(ValueError) as e:
        jc.fit(lambda p: jnp.sin(x / p["lam"]), obs, {"lam": 10.0}, noise="multiplicative")
    msg = str(e.value)
    assert "predict returned a value <= 0 at index (0,)" in msg  # sin(0) = 0
    assert "no positive signal" in msg and "round-off" not in msg


def test_non_finite_prediction_names_the_index() -> None:
    with pytest.raises(ValueError) as e:
        jc.fit(lambda p: p["lam"] / (x - 50.0) ** 0 * jnp.where(x == 25.0, jnp.nan, 1.0), obs, {"lam": 1.0})
    assert "predict returned nan at index (5,) (1 of 21 values not finite)" in str(e.value)
