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

* ``"secretion:<substrate>"`` (amount/s), ``"uptake:<substrate>"`` (µm^ndim/s):
  the cell's rate for that substrate; base value = the cell's rate when the run starts.
* ``"speed"`` (µm/s): random motility; each step the cell moves ``speed·dt`` in a
  fresh uniformly random direction (persistence time = one step, so the
  effective diffusivity is ``speed²·dt/ndim`` µm²/s).
* ``"chemotaxis:<substrate>"`` (µm/s): the cell moves ``value·dt`` per step
  along that substrate's gradient direction (toward higher concentration; no
  move where the gradient is 0).
* ``"division"``, ``"death"`` (1/s): a rate ``r`` becomes the per-step
  probability ``1 − exp(−r·dt)``; one uniform number per cell and step picks
  at most one event (death, else division); division uses
  :func:`jaxcell.divide`, death sets ``alive`` False (the step books what the
  cell held).

The base value of a behaviour is per cell, stored in ``Cells.base`` when a run
starts (:meth:`Rules.prepare`, called by :func:`jaxcell.simulate`) and then
carried along, inherited by daughters and kept by resumed runs: the rates the
cell had for secretion and uptake, ``rules(..., base=...)`` for the others
(0 when not given). Randomness comes from ``env.key`` only, so reruns and
resumes give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcell._node import as_float, check_nonneg, is_concrete, node, replace, static_field
from jaxcell.cells import Cells, divide, random_direction

__all__ = ["BEHAVIOURS", "Rule", "Rules", "rules"]

BEHAVIOURS = ("secretion:<substrate>", "uptake:<substrate>", "speed", "chemotaxis:<substrate>", "division", "death")
"""The behaviours a :class:`Rule` can regulate (``<substrate>`` is a substrate's name)."""

_PER_SUBSTRATE = ("secretion", "uptake", "chemotaxis")
_PLAIN = ("speed", "division", "death")
UNITS = {"secretion": "amount/s", "uptake": "µm^ndim/s", "chemotaxis": "µm/s", "speed": "µm/s",
         "division": "1/s", "death": "1/s"}


def _split(behaviour: str) -> tuple[str, str | None]:
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
        head, _ = _split(behaviour)
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
        r = jnp.maximum(x, 0) / self.K
        pos = r > 0
        # a safe power: (0)^n with n < 1 has an infinite derivative, kept out of grad
        h = jnp.where(pos, jnp.power(jnp.where(pos, r, 1.0), self.n), 0.0)
        return jnp.where(self.applies(cells), h, 0.0)

    def applies(self, cells: Cells) -> jax.Array:
        """``(N,)`` bool: live cells of this rule's type."""
        ok = cells.alive
        return ok if self.cell_type is None else ok & (cells.type == self.cell_type)


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
        sec, upt = cells.secretion, cells.uptake
        step = jnp.zeros_like(cells.position)
        ndim = cells.position.shape[1]
        for k, (v, touched) in values.items():
            head, sub = _split(k)
            if head in ("secretion", "uptake"):
                col = env.names.index(sub)
                arr = sec if head == "secretion" else upt
                arr = arr.at[:, col].set(jnp.where(touched, v, arr[:, col]))
                sec, upt = (arr, upt) if head == "secretion" else (sec, arr)
            elif head == "speed":
                u = random_direction(jax.random.fold_in(env.key, 1), cells.n, ndim, cells.position.dtype)
                step = step + jnp.where(alive[:, None], v[:, None] * u, 0)
            elif head == "chemotaxis":
                g = env.gradient[:, env.names.index(sub), :ndim]
                sq = jnp.sum(g * g, axis=1, keepdims=True)
                # sqrt of a safe argument: |g| has an infinite derivative at g = 0 (NaN in grad)
                unit = jnp.where(sq > 0, g / jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
                step = step + jnp.where(alive[:, None], v[:, None] * unit, 0)
        new = replace(cells, secretion=sec, uptake=upt, position=cells.position + dt * step)
        if "death" in values or "division" in values:
            # one uniform per cell decides the step's event: death with probability p_death, else
            # division with probability p_division (one event per cell and step; p_death + p_division
            # is capped at 1)
            u = jax.random.uniform(jax.random.fold_in(env.key, 2), (cells.n,), cells.position.dtype)
            zero = jnp.zeros((cells.n,), cells.position.dtype)
            p_die = -jnp.expm1(-values["death"][0] * dt) if "death" in values else zero
            p_div = -jnp.expm1(-values["division"][0] * dt) if "division" in values else zero
            dies = new.alive & (u < p_die)
            splits = new.alive & ~dies & (u < p_die + p_div)
            new = replace(new, alive=new.alive & ~dies)
            if "division" in values:
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
        """Cells with every base value the rules need recorded (those already there are kept).

        Checks the rules against ``model`` (substrate names, receptors for
        ``kind="bound"``); :func:`jaxcell.simulate` calls it before the loop.
        """
        names = tuple(model.names)
        for r in self.rules:
            _, sub = _split(r.behaviour)
            for what, name in (("signal", r.signal), ("behaviour", sub)):
                if name is not None and name not in names:
                    raise ValueError(f"Rule {what} {name!r} ({r.behaviour!r}) is no substrate of the model; "
                                     f"substrates: {list(names)}")
            if r.kind == "bound" and cells.receptors is None:
                raise ValueError(f"Rule on {r.signal!r} with kind='bound' needs cells with receptors "
                                 "(jc.Receptors); or use kind='concentration'")
        rest = dict(cells.base)
        n = cells.n
        for k in self.keys:
            if k in rest:
                continue
            head, sub = _split(k)
            if head in ("secretion", "uptake") and k not in self.base:
                rest[k] = jnp.asarray(getattr(cells, head))[:, names.index(sub)]
                continue
            table = self.base.get(k)
            if table is None:
                rest[k] = jnp.zeros((n,), cells.position.dtype)
            elif jnp.ndim(table) == 0:
                rest[k] = jnp.full((n,), table, cells.position.dtype)
            else:
                types = np.asarray(cells.type)
                if types.size and types.max() >= np.shape(table)[0]:
                    raise ValueError(f"rules base[{k!r}] has {np.shape(table)[0]} per-type values but the cells "
                                     f"have type {int(types.max())}")
                rest[k] = jnp.asarray(table, cells.position.dtype)[cells.type]
        return replace(cells, base=rest)


def rules(rule_list: Sequence[Rule], base: Mapping[str, Any] | None = None) -> Rules:
    """Combine rules into one behaviour for ``jc.simulate(..., behaviour=...)``.

    Args:
        rule_list: :class:`Rule` objects.
        base: optional base values for behaviours that cells do not carry:
            behaviour → a number or a ``(T,)`` table per cell type, in the
            behaviour's unit (``{"division": 1e-5, "speed": [0.0, 0.05]}``); a
            behaviour named here but in no rule runs at its base value (plain
            random motility, constant division). Secretion and uptake default to
            the cells' own rates when the run starts.

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
        head, _ = _split(k)
        arr = as_float(v, f"rules base[{k!r}]")
        if np.ndim(arr) > 1:
            raise ValueError(f"rules base[{k!r}] must be a number or a (T,) table per cell type, got "
                             f"shape {np.shape(arr)}")
        check_nonneg(arr, f"rules base[{k!r}]", UNITS[head])
        tables[k] = arr
    keys = tuple(dict.fromkeys([r.behaviour for r in rule_list] + list(tables)))
    return Rules(rules=rule_list, base=tables, keys=keys)
