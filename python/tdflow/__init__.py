"""tdflow: fast gradient flow for over-parametrized symmetric tensor decomposition."""
try:
    from . import _core
except ImportError as err:  # pragma: no cover - only when the extension is missing
    raise ImportError(
        "tdflow's compiled extension tdflow._core could not be imported. Was the package "
        "built and installed (python -m pip install .)? Importing from a source checkout "
        "without building does not work."
    ) from err
