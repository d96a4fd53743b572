"""The import path of :mod:`tdflow.sweeps` before it became a package: ``from tdflow.sweep
import register_kind, FLOW_DEFAULTS, ...`` keeps working. ``tdflow.sweep`` itself is the
function :func:`tdflow.sweeps.sweep` (``tdflow/__init__.py`` imports this module first, so that
a later ``import tdflow.sweep`` does not replace that attribute by the module)."""
from .sweeps import *  # noqa: F401,F403
from .sweeps import __all__  # noqa: F401
from .io import load_toml  # noqa: F401,E402  (the spec reader's old name here)
