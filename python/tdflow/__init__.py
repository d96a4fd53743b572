"""tdflow: fast gradient flow for over-parametrized symmetric tensor decomposition.

The compiled core (C++/Eigen/OpenMP) lives in the private module ``tdflow._core``; this package
re-exports what users need.
"""
from ._openmp import loading_environment

try:
    with loading_environment():  # the OpenMP runtime reads its wait policy as it loads
        from . import _core
except ImportError as err:  # pragma: no cover - only when the extension is missing
    raise ImportError(
        "tdflow's compiled extension tdflow._core could not be imported. Was the package "
        "built and installed (python -m pip install .)? Importing from a source checkout "
        "without building does not work."
    ) from err

from . import analysis, theory
from .beyond_lazy import BeyondLazy, BeyondLazyResult, VariantState, variant_gradient, variant_loss, variant_model
from .compare import Comparison, ComparisonRow, run_comparison
from .cp import CPTensor
from .deflation import DeflationResult, Schedule, deflate, resume
from .flow import GradientFlow, IntegrationError, Trajectory
from .lazy import LazyFit, LazySweep, lazy_features, lazy_fit, lazy_sweep, symmetric_dim
from .linear import DeepLinearFlow, LinearTrajectory, RateBound
from .power import PowerResult, tensor_power_method
from .sampling import sphere
from .sweep import sweep  # imports dask only when a sweep runs
from .target import Target, geometric_weights, power_law_weights, uniform_weights
from .threads import get_num_threads, num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    # tensors, targets, initial states
    "CPTensor", "Target", "geometric_weights", "power_law_weights", "uniform_weights", "sphere",
    # gradient flow of the deflation model
    "GradientFlow", "IntegrationError", "Trajectory",
    # Algorithm 2 and its analysis
    "DeflationResult", "Schedule", "analysis", "deflate", "resume", "theory",
    # the other systems of the papers
    "BeyondLazy", "BeyondLazyResult", "VariantState", "variant_gradient", "variant_loss",
    "variant_model", "PowerResult", "tensor_power_method", "LazyFit", "LazySweep",
    "lazy_features", "lazy_fit", "lazy_sweep", "symmetric_dim", "Comparison", "ComparisonRow",
    "run_comparison", "DeepLinearFlow", "LinearTrajectory", "RateBound",
    # sweeps and threads
    "sweep", "get_num_threads", "num_threads", "set_num_threads",
]
