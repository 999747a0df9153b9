"""Small helpers shared by every module: frozen pytree dataclasses and input checks."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def static_field(**kwargs: Any) -> Any:
    """A dataclass field kept in the treedef (hashable, never traced)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def node(cls: type) -> type:
    """Make ``cls`` a frozen dataclass registered as a pytree.

    Fields marked with :func:`static_field` are auxiliary data; the rest are
    leaves. Unflattening bypasses ``__init__`` so that validation (which only
    runs on concrete values) never sees JAX's placeholder objects.
    """
    cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
    fields = dataclasses.fields(cls)
    dyn = tuple(f.name for f in fields if not f.metadata.get("static"))
    sta = tuple(f.name for f in fields if f.metadata.get("static"))

    def flatten_with_keys(obj: Any) -> tuple[list[Any], tuple[Any, ...]]:
        children = [(jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in dyn]
        return children, tuple(getattr(obj, n) for n in sta)

    def flatten(obj: Any) -> tuple[list[Any], tuple[Any, ...]]:
        return [getattr(obj, n) for n in dyn], tuple(getattr(obj, n) for n in sta)

    def unflatten(aux: tuple[Any, ...], children: Any) -> Any:
        obj = object.__new__(cls)
        for n, v in zip(dyn, children):
            object.__setattr__(obj, n, v)
        for n, v in zip(sta, aux):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


def replace(obj: Any, **changes: Any) -> Any:
    """Copy of a :func:`node` object with some fields changed, without re-validating."""
    new = object.__new__(type(obj))
    for f in dataclasses.fields(obj):
        object.__setattr__(new, f.name, changes.get(f.name, getattr(obj, f.name)))
    return new


def float_dtype() -> Any:
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return jnp.result_type(float)


def _tracer_type() -> type:
    # jax.core is being slimmed release by release; fall back to the private home
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tracer = getattr(jax.core, "Tracer", None)
    if tracer is None:
        from jax._src.core import Tracer as tracer  # noqa: N813
    return tracer


_TRACER = _tracer_type()


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds actual numbers (not a tracer)."""
    return not isinstance(x, _TRACER)


def as_float(x: Any, name: str) -> Any:
    """``x`` as an array of the default float dtype; a clear error for junk.

    Concrete input stays a NumPy array: inside ``jax.jit`` (every ``jc.fit``)
    a ``jnp`` conversion would turn even a literal into a tracer and switch
    off the input checks and the static stability bounds that need values.
    """
    if isinstance(x, _TRACER):
        return x.astype(float_dtype())
    if isinstance(x, (str, bytes)) or (isinstance(x, np.ndarray) and x.dtype.kind in "SUO"):
        raise ValueError(f"{name} must be a number or an array of numbers, got {x!r}")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or an array of numbers, got {x!r}") from None
    return arr.astype(np.dtype(float_dtype()))


def check_finite(x: Any, name: str, fix: str = "") -> None:
    """Raise ValueError if a concrete ``x`` holds NaN or inf."""
    if is_concrete(x):
        a = np.asarray(x)
        if a.size and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} holds NaN or infinite values{': ' + fix if fix else ''}")


def check_nonneg(x: Any, name: str, unit: str, why: str = "rates are non-negative") -> None:
    """Raise ValueError if a concrete ``x`` is negative, NaN or infinite."""
    if is_concrete(x):
        a = np.asarray(x)
        if a.size and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite ({unit}), got NaN or inf")
        if a.size and np.any(a < 0):
            raise ValueError(f"{name} must be >= 0 ({unit}), got {a.min()!r}; {why}")


def concrete_float(x: Any) -> float | None:
    """``float(x)`` when ``x`` is concrete, else None; a string is refused (``"10"`` is no number here)."""
    if isinstance(x, (str, bytes)):
        raise ValueError(f"expected a number, got the string {x!r}")
    return float(np.asarray(x)) if is_concrete(x) else None


def concrete_max(x: Any) -> float | None:
    """Largest value of a concrete number or array, else None."""
    return float(np.max(np.asarray(x))) if is_concrete(x) else None
