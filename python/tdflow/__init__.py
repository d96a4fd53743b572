"""tdflow: fast gradient flow for over-parametrized symmetric tensor decomposition.

The compiled core (C++/Eigen/OpenMP) lives in the private module ``tdflow._core``; this package
re-exports what users need.
"""
try:
    from . import _core
except ImportError as err:  # pragma: no cover - only when the extension is missing
    raise ImportError(
        "tdflow's compiled extension tdflow._core could not be imported. Was the package "
        "built and installed (python -m pip install .)? Importing from a source checkout "
        "without building does not work."
    ) from err

from .cp import CPTensor
from .flow import GradientFlow, IntegrationError, Trajectory
from .linear import DeepLinearFlow, LinearTrajectory, RateBound
from .sampling import sphere
from .target import Target, geometric_weights, power_law_weights, uniform_weights
from .threads import get_num_threads, num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "CPTensor",
    "DeepLinearFlow",
    "GradientFlow",
    "IntegrationError",
    "LinearTrajectory",
    "RateBound",
    "Target",
    "Trajectory",
    "geometric_weights",
    "get_num_threads",
    "num_threads",
    "power_law_weights",
    "set_num_threads",
    "sphere",
    "uniform_weights",
]

from .beyond_lazy import BeyondLazy, BeyondLazyResult, VariantState, variant_gradient, variant_loss, variant_model
from .compare import Comparison, ComparisonRow, run_comparison
from .lazy import LazyFit, LazySweep, lazy_features, lazy_fit, lazy_sweep, symmetric_dim
from .power import PowerResult, tensor_power_method

__all__ += [
    "BeyondLazy", "BeyondLazyResult", "Comparison", "ComparisonRow", "LazyFit", "LazySweep",
    "PowerResult", "VariantState", "lazy_features", "lazy_fit", "lazy_sweep", "run_comparison",
    "symmetric_dim", "tensor_power_method", "variant_gradient", "variant_loss", "variant_model",
]

from . import analysis  # noqa: E402
from .deflation import DeflationResult, Schedule, deflate, resume  # noqa: E402

__all__ += ["DeflationResult", "Schedule", "analysis", "deflate", "resume"]

from .sweep import sweep  # noqa: E402  (imports dask only when a sweep runs)
__all__ += ["sweep"]
