"""Signal → behaviour rules (PhysiCell's grammar) as one behaviour for :func:`jaxcell.simulate`.

A :class:`Rule` says how one signal sensed by a cell moves one of its behaviours
up toward a maximum or down toward a minimum with a Hill factor;
:func:`rules` combines a list of them into a :class:`Rules` object, a pure
``behaviour(cells, env, t) -> cells`` that runs inside the compiled loop.

Combination (as PhysiCell's ``Hypothesis_Rule``): for one behaviour of a cell
with base value ``b0``, the up-rules that apply to it give
``S_up = Σ (x_i/K_i)^n_i`` and ``U = b0 + (max − b0)·S_up/(1 + S_up)``; the
down-rules give ``S_dn`` likewise and the value is
``U + (min − U)·S_dn/(1 + S_dn)``, where ``min`` is the down-rules' ``max``
argument (the value reached at full repression). Several up-rules (or
down-rules) of one behaviour that apply to the same cells must share ``max``.

Behaviours and units:

* ``"secretion:<substrate>"`` (amount/s), ``"uptake:<substrate>"`` (µm^ndim/s),
  ``"saturation_rate:<substrate>"`` (µm^ndim/s, BioFVM's secretion toward the
  cell's target density, PhysiCell's "<substrate> secretion"): the cell's rate for
  that substrate; base value = the cell's rate when the run starts.
* ``"speed"`` (µm/s): random motility; each step the cell moves ``speed·dt`` in a
  fresh uniformly random direction (persistence time = one step, so the
  effective diffusivity is ``speed²·dt/ndim`` µm²/s).
* ``"chemotaxis:<substrate>"`` (µm/s): the cell moves ``value·dt`` per step
  along that substrate's gradient direction (toward higher concentration; no
  move where the gradient is 0).
* ``"division"``, ``"death"`` (1/s): a rate ``r`` becomes the per-step
  probability ``1 − exp(−r·dt)``, drawn independently for the two (a cell
  that dies does not divide in that step) from 32-bit integers, so small
  probabilities are not rounded; division uses :func:`jaxcell.divide`, death
  sets ``alive`` False (the step books what the cell held).

The base value of a behaviour is per cell, in ``Cells.base``, filled by
:meth:`Rules.prepare` (called by :func:`jaxcell.simulate` before the loop):
``rules(..., base=...)`` tables are written at every call; secretion and
uptake otherwise start from the rates the cells had when the first run
started and are then carried along (inherited by daughters, kept by resumed
runs). The Hill sum ``(x/K)^n`` is capped at e^80, where the factor is 1 in any
precision. Randomness comes from ``env.key`` only, so reruns and resumes give
the same numbers. Two rules of one behaviour and direction that reach the same
cells must share ``max``: checked when the values are concrete, not for traced
ones (the last rule's ``max`` would win).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import as_float, check_nonneg, is_concrete, node, replace, static_field
from jaxcell.cells import Cells, divide, random_direction

__all__ = ["BEHAVIOURS", "UNITS", "Rule", "Rules", "parse_behaviour", "rules"]

BEHAVIOURS = ("secretion:<substrate>", "uptake:<substrate>", "saturation_rate:<substrate>", "speed",
              "chemotaxis:<substrate>", "division", "death")
"""The behaviours a :class:`Rule` can regulate (``<substrate>`` is a substrate's name)."""

HILL_LOG_CAP = 80.0  # (x/K)^n is capped at e^80 ≈ 5.5e34, where the Hill factor is 1 in any float
_PER_SUBSTRATE = ("secretion", "uptake", "saturation_rate", "chemotaxis")
_RATES = ("secretion", "uptake", "saturation_rate")  # per-substrate rates the cells carry
_PLAIN = ("speed", "division", "death")
UNITS = {"secretion": "amount/s", "uptake": "µm^ndim/s", "saturation_rate": "µm^ndim/s", "chemotaxis": "µm/s",
         "speed": "µm/s",
         "division": "1/s", "death": "1/s"}


def parse_behaviour(behaviour: str) -> tuple[str, str | None]:
    """``"secretion:IL-2"`` → ``("secretion", "IL-2")``; ``"speed"`` → ``("speed", None)``; ValueError otherwise."""
    if not isinstance(behaviour, str):
        raise ValueError(f"Rule.behaviour must be a string, one of {BEHAVIOURS}, got {behaviour!r}")
    head, sep, sub = behaviour.partition(":")
    if head in _PER_SUBSTRATE and sep and sub:
        return head, sub
    if head in _PLAIN and not sep:
        return head, None
    raise ValueError(f"Rule.behaviour must be one of {BEHAVIOURS} (a substrate's name after the colon), "
                     f"got {behaviour!r}")


@node
class Rule:
    """One signal → behaviour rule: a Hill factor moving a behaviour up or down.

    Args:
        signal: the substrate sensed (its name).
        kind: ``"concentration"`` (amount/µm^ndim at the cell, the model's
            coupling) or ``"bound"`` (the cell's bound receptors of ``signal``).
        behaviour: one of :data:`BEHAVIOURS`, e.g. ``"division"`` or ``"secretion:IL-2"``.
        direction: ``"up"`` (toward ``max``) or ``"down"`` (toward ``max`` as the
            value at full repression, usually 0).
        max: the saturation value, in the behaviour's unit (amount/s, µm^ndim/s,
            µm/s or 1/s), >= 0.
        K: half-maximal signal (the signal's unit), > 0.
        n: Hill exponent, > 0.
        cell_type: only cells of this ``Cells.type`` follow the rule (None: all).
    """

    max: jax.Array
    K: jax.Array
    n: jax.Array
    signal: str = static_field()
    kind: str = static_field()
    behaviour: str = static_field()
    direction: str = static_field()
    cell_type: int | None = static_field()

    def __init__(self, signal: str, kind: str = "concentration", behaviour: str = "division",
                 direction: str = "up", max: Any = 0.0, K: Any = 1.0, n: Any = 1.0,
                 cell_type: int | None = None) -> None:
        if not isinstance(signal, str) or not signal:
            raise ValueError(f"Rule.signal must be a substrate's name, got {signal!r}")
        if kind not in ("concentration", "bound"):
            raise ValueError(f"Rule.kind must be 'concentration' or 'bound', got {kind!r}")
        if direction not in ("up", "down"):
            raise ValueError(f"Rule.direction must be 'up' or 'down', got {direction!r}")
        head, _ = parse_behaviour(behaviour)
        for name, v, unit in (("max", max, UNITS[head]), ("K", K, "the signal's unit"), ("n", n, "")):
            arr = as_float(v, f"Rule.{name}")
            if np.ndim(arr) != 0:
                raise ValueError(f"Rule.{name} must be one number, got shape {np.shape(arr)}")
            check_nonneg(arr, f"Rule.{name}", unit)
            if name in ("K", "n") and is_concrete(arr) and float(arr) <= 0:
                raise ValueError(f"Rule.{name} must be > 0, got {float(arr)!r}"
                                 + ("; K is the half-maximal signal" if name == "K" else "; n is the Hill exponent"))
            object.__setattr__(self, name, arr)
        if cell_type is not None and (isinstance(cell_type, bool) or not isinstance(cell_type, (int, np.integer))
                                      or cell_type < 0):
            raise ValueError(f"Rule.cell_type must be a type id >= 0 or None, got {cell_type!r}")
        object.__setattr__(self, "signal", signal)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "behaviour", behaviour)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "cell_type", None if cell_type is None else int(cell_type))

    def hill(self, cells: Cells, env: Any) -> jax.Array:
        """``(x/K)^n`` per cell ``(N,)``, 0 for cells this rule does not apply to."""
        si = env.names.index(self.signal)
        x = cells.receptors.bound[:, si] if self.kind == "bound" else env.concentration[:, si]
        r = jnp.maximum(x, 0) / self.K  # NaN stays NaN: a broken field must not read as "no signal"
        pos = r > 0
        # (x/K)^n in log space, capped at e^80 (< float32's max): far beyond saturation S/(1+S) is 1
        # to round-off either way, and an inf would make it inf/inf. The log of a safe argument
        # keeps 0^n (infinite derivative for n < 1) out of grad.
        log_h = self.n * jnp.log(jnp.where(pos, r, 1.0))
        h = jnp.where(pos, jnp.exp(jnp.minimum(log_h, HILL_LOG_CAP)), jnp.where(jnp.isnan(r), r, 0.0))
        return jnp.where(self.applies(cells), h, 0.0)

    def applies(self, cells: Cells) -> jax.Array:
        """``(N,)`` bool: live cells of this rule's type."""
        ok = cells.alive
        return ok if self.cell_type is None else ok & (cells.type == self.cell_type)


def _threshold(p: jax.Array) -> jax.Array:
    """``floor(p·2^32)`` as uint32: ``bits < threshold`` has probability p to within 2^-32 (p in [0, 1])."""
    t = jnp.floor(jnp.clip(p, 0, 1).astype(jnp.float32) * 4294967296.0)
    return jnp.minimum(t, 4294967040.0).astype(jnp.uint32)  # the largest float32 below 2^32


@node
class Rules:
    """Rules combined into one behaviour (see the module docstring); build with :func:`rules`.

    A pytree: the rules' ``max``, ``K``, ``n`` and the base tables are leaves,
    so ``jax.grad`` reaches them through :func:`jaxcell.simulate` and new values
    do not recompile.
    """

    rules: tuple
    base: dict
    keys: tuple = static_field()

    def __call__(self, cells: Cells, env: Any, t: Any) -> Cells:
        """``behaviour(cells, env, t) -> cells``: set rates, move, kill and divide for one step of ``env.dt`` s."""
        missing = [k for k in self.keys if k not in cells.base]
        if missing:
            raise ValueError(f"cells carry no base value for {missing}: jaxcell.simulate records them when a "
                             "run starts (Rules.prepare); call rules.prepare(cells, model) when calling by hand")
        values = {k: self._value(k, cells, env) for k in self.keys}
        dt = env.dt
        alive = cells.alive
        rates = {k: getattr(cells, k) for k in _RATES}
        step = jnp.zeros_like(cells.position)
        ndim = cells.position.shape[1]
        for k, (v, touched) in values.items():
            head, sub = parse_behaviour(k)
            if head in rates:
                col = env.names.index(sub)
                rates[head] = rates[head].at[:, col].set(jnp.where(touched, v, rates[head][:, col]))
            elif head == "speed":
                u = random_direction(jax.random.fold_in(env.key, 1), cells.n, ndim, cells.position.dtype)
                step = step + jnp.where(alive[:, None], v[:, None] * u, 0)
            elif head == "chemotaxis":
                g = env.gradient[:, env.names.index(sub), :ndim]
                sq = jnp.sum(g * g, axis=1, keepdims=True)
                # sqrt of a safe argument: |g| has an infinite derivative at g = 0 (NaN in grad)
                unit = jnp.where(sq > 0, g / jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
                step = step + jnp.where(alive[:, None], v[:, None] * unit, 0)
        new = replace(cells, **rates, position=cells.position + dt * step)
        if "death" in values or "division" in values:
            # independent events with P = 1 − exp(−r·dt) each (a cell that dies does not divide in
            # that step), drawn as 32-bit integers: a float32 uniform is a multiple of 2^-23 or 2^-24,
            # which would bias a probability of 1e-6 by 10-20 %
            bits = jax.random.bits(jax.random.fold_in(env.key, 2), (cells.n, 2), jnp.uint32)
            if "death" in values:
                dies = new.alive & (bits[:, 0] < _threshold(-jnp.expm1(-values["death"][0] * dt)))
                new = replace(new, alive=new.alive & ~dies)
            if "division" in values:
                splits = new.alive & (bits[:, 1] < _threshold(-jnp.expm1(-values["division"][0] * dt)))
                new = divide(new, splits, jax.random.fold_in(env.key, 3))
        return new

    def _value(self, key: str, cells: Cells, env: Any) -> tuple[jax.Array, jax.Array]:
        """The behaviour ``key``'s value per cell ``(N,)`` and where a rule or base sets it."""
        b0 = cells.base[key]
        out, touched = b0, jnp.zeros(b0.shape, bool)
        for direction in ("up", "down"):
            group = [r for r in self.rules if r.behaviour == key and r.direction == direction]
            if not group:
                continue
            s = sum(r.hill(cells, env) for r in group)
            target = out
            for r in group:
                target = jnp.where(r.applies(cells), r.max, target)
                touched = touched | r.applies(cells)
            out = out + (target - out) * (s / (1 + s))
        if key in self.base:
            touched = touched | cells.alive
        return out, touched

    def prepare(self, cells: Cells, model: Any) -> Cells:
        """Cells with every base value the rules need in ``Cells.base``.

        A ``base=`` table given to :func:`rules` is written every time (so a
        later call with another table, or a traced one, takes effect); ``None``
        there means the cells carry the value themselves (scenario files). Other
        behaviours keep a value the cells already carry; secretion and uptake
        otherwise start from the cells' rates, the rest from 0. Checks the rules
        against ``model`` (substrate names, receptors for ``kind="bound"``, no
        :class:`jaxcell.Response` on the same rate); :func:`jaxcell.simulate`
        calls it before the loop.
        """
        names = tuple(model.names)
        for k in cells.base:
            try:
                parse_behaviour(k)
            except ValueError:
                raise ValueError(f"Cells.base has a key {k!r} that is no behaviour; use one of {BEHAVIOURS}") \
                    from None
        for r in self.rules:
            head, sub = parse_behaviour(r.behaviour)
            for resp in getattr(model, "responses", ()):
                if (resp.parameter, resp.target) == (head, sub):
                    raise ValueError(f"Rule on {r.behaviour!r} and a jc.Response on {resp.parameter} of "
                                     f"{resp.target!r} would both set that rate every step (the response first, "
                                     "so exchange would never see the rule); keep one of them")
        for r in self.rules:
            _, sub = parse_behaviour(r.behaviour)
            for what, name in (("signal", r.signal), ("behaviour", sub)):
                if name is not None and name not in names:
                    raise ValueError(f"Rule {what} {name!r} ({r.behaviour!r}) is no substrate of the model; "
                                     f"substrates: {list(names)}")
            if r.kind == "bound" and cells.receptors is None:
                raise ValueError(f"Rule on {r.signal!r} with kind='bound' needs cells with receptors "
                                 "(jc.Receptors); or use kind='concentration'")
        rest = dict(cells.base)
        n, dtype = cells.n, cells.position.dtype
        for k in self.keys:
            head, sub = parse_behaviour(k)
            table = self.base.get(k)
            if k in self.base and table is None:
                if k not in rest:
                    raise ValueError(f"rules(base={{{k!r}: None}}) says the cells carry {k!r}, but Cells.base "
                                     f"has no {k!r}; give Cells(base={{{k!r}: ...}}) or a value in base=")
            elif table is not None:
                if jnp.ndim(table) == 0:
                    rest[k] = jnp.full((n,), table, dtype)
                else:
                    if is_concrete(cells.type):
                        types = np.asarray(cells.type)
                        if types.size and (types.max() >= np.shape(table)[0] or types.min() < 0):
                            raise ValueError(f"rules base[{k!r}] has {np.shape(table)[0]} per-type values but "
                                             f"the cells have type {int(types.max())}")
                    rest[k] = jnp.asarray(table, dtype)[cells.type]
            elif k not in rest:
                rest[k] = (jnp.asarray(getattr(cells, head))[:, names.index(sub)] if head in _RATES
                           else jnp.zeros((n,), dtype))
        return replace(cells, base=rest)


def rules(rule_list: Sequence[Rule], base: Mapping[str, Any] | None = None) -> Rules:
    """Combine rules into one behaviour for ``jc.simulate(..., behaviour=...)``.

    Args:
        rule_list: :class:`Rule` objects.
        base: optional base values: behaviour → a number or a ``(T,)`` table
            per cell type, in the behaviour's unit (``{"division": 1e-5,
            "speed": [0.0, 0.05]}``), written into ``Cells.base`` at every
            :func:`jaxcell.simulate` call; or None: the cells carry their own
            (``Cells(base=...)``, as scenario files do per population). A
            behaviour named here but in no rule runs at its base value (plain
            random motility, constant division). Without an entry, secretion and
            uptake start from the cells' own rates when the first run starts,
            and the others from what ``Cells.base`` holds, else 0.

    Returns:
        A :class:`Rules` behaviour.
    """
    rule_list = tuple(rule_list)
    for r in rule_list:
        if not isinstance(r, Rule):
            raise ValueError(f"rules() takes jc.Rule objects, got {type(r).__name__}")
    for a_i, a in enumerate(rule_list):  # one saturation per behaviour, direction and cell
        for b in rule_list[a_i + 1:]:
            overlap = a.cell_type is None or b.cell_type is None or a.cell_type == b.cell_type
            if (a.behaviour, a.direction) == (b.behaviour, b.direction) and overlap and is_concrete(a.max) \
                    and is_concrete(b.max) and float(a.max) != float(b.max):
                raise ValueError(f"two {a.direction}-rules of {a.behaviour!r} for the same cells have different "
                                 f"max ({float(a.max)!r} and {float(b.max)!r}); PhysiCell's combination has one "
                                 "saturation value per behaviour: give them the same max")
    tables = {}
    for k, v in (base or {}).items():
        head, _ = parse_behaviour(k)
        if v is None:  # the cells carry it (Cells.base)
            tables[k] = None
            continue
        arr = as_float(v, f"rules base[{k!r}]")
        if np.ndim(arr) > 1:
            raise ValueError(f"rules base[{k!r}] must be a number or a (T,) table per cell type, got "
                             f"shape {np.shape(arr)}")
        check_nonneg(arr, f"rules base[{k!r}]", UNITS[head])
        tables[k] = arr
    keys = tuple(dict.fromkeys([r.behaviour for r in rule_list] + list(tables)))
    return Rules(rules=rule_list, base=tables, keys=keys)
