"""jaxcell: differentiable paracrine signalling on voxel grids (lengths µm, times s)."""

from jaxcell import solvers
from jaxcell._version import __version__ as __version__
from jaxcell.behaviour import Rule, Rules, rules
from jaxcell.binding import Response
from jaxcell.body import Compartment, Leak
from jaxcell.cells import Cells, Receptors, divide
from jaxcell.grid import Grid
from jaxcell.inference import BatchFitResult, FitResult, fit, fit_batch
from jaxcell.medium import Matrix
from jaxcell.model import Model, State
from jaxcell.posterior import Posterior, sample_posterior
from jaxcell.scenario import Scenario, load_scenario
from jaxcell.sharding import shard
from jaxcell.simulate import Trajectory, budget, simulate
from jaxcell.steady import steady_state
from jaxcell.substrate import Dirichlet, Flux, Periodic, Robin, Substrate

__all__ = [
    "BatchFitResult",
    "Cells",
    "Compartment",
    "Dirichlet",
    "FitResult",
    "Flux",
    "Grid",
    "Leak",
    "Matrix",
    "Model",
    "Periodic",
    "Posterior",
    "Receptors",
    "Response",
    "Robin",
    "Rule",
    "Rules",
    "Scenario",
    "State",
    "Substrate",
    "Trajectory",
    "budget",
    "divide",
    "fit",
    "fit_batch",
    "load_scenario",
    "rules",
    "sample_posterior",
    "shard",
    "simulate",
    "solvers",
    "steady_state",
]
