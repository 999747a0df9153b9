"""Time-stepping schemes, one module each, behind one interface (:mod:`jaxcell.solvers.base`).

``Model(solver="implicit" | "lod" | "explicit" | "spectral")`` looks the name up
here; :func:`register` adds a scheme from outside the package.
"""

# isort: skip_file
# The import order is the registration order, which `names()` reports: the default first.
from jaxcell.solvers.base import Amounts, Params, Solver, get, names, register
from jaxcell.solvers.implicit import Implicit
from jaxcell.solvers.lod import LOD
from jaxcell.solvers.explicit import Explicit
from jaxcell.solvers.spectral import Spectral

__all__ = ["LOD", "Amounts", "Explicit", "Implicit", "Params", "Solver", "Spectral", "get", "names", "register"]
