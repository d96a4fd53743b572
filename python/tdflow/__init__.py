"""tdflow: fast gradient flow for over-parametrized symmetric tensor decomposition.

The compiled core (C++/Eigen/OpenMP) lives in the private module ``tdflow._core``, which is
the build for this CPU's level (tdflow._dispatch; ``tdflow.show_config()`` says which); this
package re-exports what users need.
"""
from . import _dispatch
from ._openmp import loading_environment as _loading_environment

with _loading_environment():  # the OpenMP runtime reads its wait policy as it loads
    try:
        from . import _cpu  # noqa: F401  (compiled beside the core; its absence means no build)
    except ImportError as err:  # pragma: no cover - only when the extension is missing
        raise ImportError(
            "tdflow's compiled extensions (tdflow._cpu, tdflow._core_*) could not be imported. Was "
            "the package built and installed (python -m pip install .)? Importing from a source "
            "checkout without building does not work."
        ) from err
    _core = _dispatch.load(__name__)

from . import analysis, theory
from .beyond_lazy import BeyondLazy
from .compare import run_comparison
from .cp import CPTensor
from .deflation import deflate, resume
from .deflation_result import DeflationResult
from .flow import GradientFlow
from .lazy import lazy_fit, lazy_sweep
from .linear import DeepLinearFlow
from .options import SolverOptions
from .power import tensor_power_method
from .sampling import sphere
from .schedule import Schedule
from .solution import IntegrationError, LinearTrajectory, Status, Trajectory
from .sweep import sweep  # the function (tdflow.sweeps); dask is imported only when a sweep runs
from .target import Target, geometric_weights, power_law_weights, uniform_weights
from .threads import get_num_threads, num_threads, set_num_threads
from .config import show_config

__version__ = "0.1.0"

# What users call. Everything else stays importable from its module (tdflow.beyond_lazy.VariantState,
# tdflow.lazy.LazyFit, tdflow.linear_bounds.RateBound, tdflow.sweeps.register_kind, ...).
__all__ = [
    # tensors, targets, initial states
    "CPTensor", "Target", "geometric_weights", "power_law_weights", "uniform_weights", "sphere",
    # flows, their options and results
    "GradientFlow", "DeepLinearFlow", "SolverOptions", "Status", "Trajectory",
    "LinearTrajectory", "IntegrationError",
    # Algorithm 2 and its analysis
    "deflate", "resume", "Schedule", "DeflationResult", "analysis", "theory",
    # the other algorithms of the papers and the baselines
    "BeyondLazy", "tensor_power_method", "lazy_fit", "lazy_sweep", "run_comparison",
    # sweeps and threads
    "sweep", "get_num_threads", "num_threads", "set_num_threads",
    # for bug reports
    "show_config",
]
