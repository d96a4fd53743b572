"""Sphinx configuration of tdflow's documentation site.

Build (from the repository root, with the package installed or built in place)::

    python -m pip install '.[docs]'
    python -m sphinx -W -n --keep-going -b html docs docs/_build/html

Sphinx + numpydoc + sphinx-gallery, as NumPy, SciPy, boost-histogram and iminuit: see
about.rst for why. The API pages are generated from the docstrings (autosummary); the gallery's
examples (../examples) run at every build.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

try:
    import tdflow
except ImportError as err:  # the docs document the built package, never the bare sources
    raise ImportError(
        "building the docs needs tdflow importable with its compiled core: "
        "python -m pip install '.[docs]' (or PYTHONPATH=python after /work/tools/devbuild)"
    ) from err

HERE = Path(__file__).resolve().parent

project = "tdflow"
author = "the tdflow developers"
copyright = "the tdflow developers"
release = tdflow.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "tdflow_xref",        # _ext/: a docstring's names mean what they mean in its module
]
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

templates_path = ["_templates"]
exclude_patterns = ["_build", "README.md", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.json"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"

# ---- nitpicky: every cross-reference resolves, or the build fails --------------------------
nitpicky = True
# Names outside tdflow. The build is offline (CI reaches PyPI only), so intersphinx cannot fetch
# the inventories of Python, NumPy, Dask, ...: these references are genuinely unresolvable
# here and are rendered as plain text. Each pattern says whose names it covers.
nitpick_ignore_regex = [
    (r"py:.*", r"numpy(\..*)?"),          # numpy.ndarray, numpy.random.Generator, numpy.typing
    (r"py:.*", r"np\..*"),                # the same, spelled np. in a docstring type
    (r"py:.*", r"(pathlib|os|collections\.abc|argparse|enum|contextlib|io|types|"
               r"dataclasses|concurrent\.futures)\..*"),   # the standard library
    (r"py:.*", r"(distributed|dask)(\..*)?"),             # Dask: sweeps' client and cluster
    (r"py:.*", r"(matplotlib|pandas|xarray|torch|tensorly|tqdm)(\..*)?"),  # optional extras
    (r"py:.*", r"tdflow\._.*"),   # private modules (tdflow._openmp, ...): named, not documented
]

# ---- autodoc / autosummary / numpydoc --------------------------------------------------------
# The torch backend's modules (torch_kernels, torch_stepper, torch_events) import torch at their
# top; the docs extra does not install it (3 GB), so without torch autodoc reads them with torch
# mocked. With torch installed they are imported as they are.
try:
    import torch  # noqa: F401
    autodoc_mock_imports: list = []
except ImportError:
    autodoc_mock_imports = ["torch"]
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
numpydoc_show_class_members = False   # the class template lists members (autodoc :members:)
numpydoc_xref_param_type = True       # "x : float" links its type
# numpydoc's default aliases point at Python's and NumPy's inventories (python:int, ...), which
# an offline build does not have: the plain words stay plain text.
_PLAIN = ("None", "True", "False", "bool", "boolean", "int", "float", "str", "string", "dict",
          "list", "tuple", "callable", "iterable", "sequence", "mapping", "generator",
          "contextmanager", "array", "array-like", "array_like", "scalar", "path", "path-like",
          "optional", "default", "of", "or", "shape", "sequences", "TensorLy")
numpydoc_xref_aliases = {word: word for word in _PLAIN}
numpydoc_xref_aliases.update({"ndarray": "numpy.ndarray", "np.ndarray": "numpy.ndarray",
                              "Generator": "numpy.random.Generator",
                              "Axes": "matplotlib.axes.Axes"})
numpydoc_xref_ignore = set(_PLAIN)

# The public names of tdflow are documented once, under tdflow.X (autodoc adds the defining
# module as :canonical:). A module page lists its re-exported members as links to those pages.
TOP = {name: getattr(tdflow, name) for name in tdflow.__all__}
REEXPORTED = {f"{obj.__module__}.{obj.__name__}": f"tdflow.{name}"
              for name, obj in TOP.items()
              if not inspect.ismodule(obj) and getattr(obj, "__module__", "").startswith("tdflow.")}


def module_constants(package: str = "tdflow") -> dict:
    """Public UPPER_CASE names that each module assigns at its top level (its own constants)."""
    import ast
    import pkgutil

    out = {}
    root = Path(tdflow.__file__).parent
    for info in pkgutil.walk_packages([str(root)], prefix=f"{package}."):
        spec = importlib.util.find_spec(info.name)
        if spec is None or not (spec.origin or "").endswith(".py"):
            continue
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        names = []
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) else [])
            for t in targets:
                for n in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(n, ast.Name) and n.id.isupper() and not n.id.startswith("_"):
                        names.append(n.id)
        out[info.name] = names
    return out


autosummary_context = {"reexported": REEXPORTED, "constants": module_constants()}
# ---- sphinx-gallery: ../examples, run at every build ----------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",          # run every plot_*.py
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "reference_url": {"tdflow": None},
    "min_reported_time": 0,
    "show_memory": False,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "capture_repr": (),
}

# ---- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"tdflow {release}"
html_static_path: list = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
}
html_show_sourcelink = False
myst_heading_anchors = 3


def dataclass_factories(app, what, name, obj, options, signature, return_annotation):
    """A dataclass field with a ``default_factory`` shows as ``= <factory>`` in the generated
    ``__init__``, which Sphinx cannot parse as Python (it then splits the signature at every
    comma, ``Dict[str`` included): show ``= ...`` instead."""
    if signature and "<factory>" in signature:
        signature = signature.replace("<factory>", "...")
    return signature, return_annotation


def setup(app):
    app.connect("autodoc-process-signature", dataclass_factories)
