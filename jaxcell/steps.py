"""Steps chosen for an accuracy: ``jc.simulate(..., dt=None, rtol=...)``.

Not for ``solver="explicit"``, whose error in time is set by its stability
sub-step, not by ``dt`` (refused, naming the alternatives).

The step is chosen before compiling, on concrete values, so the run itself is an
ordinary fixed-step run (jit, grad and vmap reach the model's parameters as with
a fixed ``dt``). How:

* a scheme that is exact in time for the model (:meth:`Solver.exact_in_time`:
  the spectral solver without cell uptake, saturation, receptors or responses)
  takes one step per save interval;
* otherwise, **step doubling over the whole run**: the run is made with ``dt``
  and ``dt/2`` (``dt`` first the longest save interval), and the difference of
  the saved fields gives the error of each by Richardson's rule for the scheme's
  order p in time (:func:`time_order`): ``err(dt) ≈ e·2^p/(2^p − 1)`` and
  ``err(dt/2) ≈ e/(2^p − 1)`` with ``e`` the largest relative difference
  (pointwise, where the field is above 1e-4 of its maximum in that frame and
  substrate). The next pair is taken at the step that error model predicts
  (``dt_max/2^k``, at least a halving); a step is accepted only once the
  differences of two pairs shrank as the order says (at least half of
  ``(dt/dt')^p``), so that the estimate is in its asymptotic range, and only when
  its estimated error is at most half of ``rtol``.

Cost: typically two or three pairs of probe runs over the whole run, the finest
at half the chosen step, each step size compiled once. Random behaviours are
refused (their events differ between step sizes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxcell._node import _TRACER

__all__ = ["FLOOR", "SAFETY", "choose", "concrete", "relative_error", "time_order"]

FLOOR = 1e-4  # the error counts where the field is above this fraction of its maximum
SAFETY = 0.5  # the chosen step's estimated error is at most SAFETY·rtol
MAX_HALVINGS = 20
MAX_PROBE_STEPS = 200_000  # a probe run longer than this is refused (the scheme is too slow for rtol)


def time_order(model: Any, cells: Any) -> int:
    """Order in dt of a run of ``model``: the scheme's (:meth:`Solver.time_order`), or 1 when a stage is
    split from the transport in first order (matrix, compartments, receptor binding)."""
    split = model.has_matrix or bool(model.compartments) or (cells is not None and cells.receptors is not None)
    return 1 if split else int(model.scheme.time_order(model))


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest ``|a − b|/|b|`` over frames ``(T, S, *grid)``, where ``|b|`` is above :data:`FLOOR` of the
    maximum of its frame and substrate."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    flat_a, flat_b = a.reshape(a.shape[0], a.shape[1], -1), b.reshape(b.shape[0], b.shape[1], -1)
    peak = np.max(np.abs(flat_b), axis=2, keepdims=True)
    where = (np.abs(flat_b) > FLOOR * peak) & (peak > 0)
    if not where.any():
        return 0.0
    return float(np.max(np.abs(flat_a - flat_b)[where] / np.abs(flat_b)[where]))


def choose(run: Callable[[float], np.ndarray], gaps: Sequence[float], order: int, rtol: float,
           solver: str = "") -> float:
    """The longest step ``dt_max/2^m`` whose estimated error is at most ``SAFETY·rtol`` (module docstring).

    Args:
        run: ``dt -> saved fields (T, S, *grid)`` of the whole run at step ``dt``.
        gaps: the save intervals (s), > 0.
        order: the scheme's order in time.
        rtol: the relative accuracy asked for.

    Raises:
        ValueError: no step down to ``dt_max/2^20`` meets ``rtol`` (e.g. below float32's round-off), or
            a probe would take more than :data:`MAX_PROBE_STEPS` steps.
    """
    dt = float(max(gaps))
    span = float(sum(gaps))
    gain = 2.0**order

    def probe(step: float) -> np.ndarray:
        if span / step > MAX_PROBE_STEPS:
            raise ValueError(f"rtol = {rtol:g} needs steps below {2 * step:.3g} s with solver={solver!r} (order "
                             f"{order} in time): more than {MAX_PROBE_STEPS} steps to probe. Use solver='implicit' "
                             "or 'spectral', a larger rtol, or give dt")
        return run(step)

    a, b = probe(dt), probe(dt / 2)
    e = relative_error(a, b)
    settled = False
    for _ in range(MAX_HALVINGS):
        if e == 0.0:
            return dt
        if e <= 1e-3 * SAFETY * rtol:  # far below rtol (or at round-off): no need to see the order
            return dt / 2
        big, small = e * gain / (gain - 1), e / (gain - 1)
        if settled and big <= SAFETY * rtol:
            return dt
        if settled and small <= SAFETY * rtol:
            return dt / 2
        # jump to the step the error model predicts (at least a halving), rounded to dt_max/2^k, and
        # check there that the differences shrank as the order says
        k = max(1, int(np.ceil(np.log2(big / (SAFETY * rtol)) / order))) if big > SAFETY * rtol else 1
        new = dt / 2.0**k
        a = b if k == 1 else probe(new)
        b = probe(new / 2)
        e_new = relative_error(a, b)
        settled = e_new > 0 and e / e_new >= (dt / new) ** order / 2
        dt, e = new, e_new
    raise ValueError(f"no step down to {dt:.3g} s meets rtol = {rtol:g} (the last difference between steps "
                     f"was {e:.3g}, relative): ask for a larger rtol, or use float64 (JAX_ENABLE_X64=1) "
                     "when rtol is near float32's round-off")


def concrete(tree: Any) -> Any:
    """``tree`` with every traced leaf replaced by its value where the tracer carries one (``jax.grad``,
    ``jax.jvp``); a ValueError under ``jax.jit`` or ``jax.vmap``, whose tracers carry none."""

    def value(x: Any) -> Any:
        while isinstance(x, _TRACER):
            if not hasattr(x, "primal"):
                raise ValueError("dt=None chooses the step from runs on concrete values, and under jax.jit or "
                                 "jax.vmap the model's values are not known: choose it outside with "
                                 "jaxcell.simulate.choose_step(model, state, t_end, rtol, ...) and pass dt=")
            x = x.primal
        return x

    return jax.tree_util.tree_map(value, tree)
