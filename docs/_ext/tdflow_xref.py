"""Cross-references in tdflow's docstrings mean what the names mean in Python.

A docstring is read in the namespace of the module that holds it: ``:class:`Schedule``` in
tdflow.deflation's docstring is the ``Schedule`` that module imports, documented as
``tdflow.Schedule``; ``:meth:`DeflationResult.save``` is that class's method. Sphinx looks a
name up only among the names it documented under the current module (and autosummary's tables
show a docstring's first line under the table's module), so such references would fail. Two
steps make them resolve, and only to the object that Python itself finds:

1. ``autodoc-process-docstring``: a relative target that Python finds in the docstring's own
   namespace (its class, then its module) is written out in full (``DeflationResult.save`` ->
   ``tdflow.deflation.DeflationResult.save``; the text shown stays as written).
2. ``missing-reference``: a full name that Sphinx did not document under that name (an import,
   a re-export) is looked up in Python and linked to the page where that very object is
   documented.

A name that Python cannot find, or an object documented nowhere, still fails the build.
"""
from __future__ import annotations

import importlib
import inspect
import re

PY_ROLES = "func|class|meth|attr|obj|data|const|exc|mod"
ROLE = re.compile(rf"(:(?:py:)?(?:{PY_ROLES}):)`([^`<]*?)(?:\s*<([^`>]+)>)?`")

_DOCUMENTED = {}   # id(object) -> documented full name, built once when first needed
_KEEP = []         # the looked-up objects, kept alive while their ids serve as keys


def lookup(name):
    """The Python object called ``name`` (a dotted path), or None: attributes first, as Python
    reads ``a.b.c`` (``tdflow.sweep`` is the function, not the module of that name)."""
    parts = name.split(".")
    try:
        obj = importlib.import_module(parts[0])
    except Exception:
        return None
    for i, attr in enumerate(parts[1:], start=2):
        try:
            obj = inspect.getattr_static(obj, attr) if inspect.isclass(obj) else getattr(obj, attr)
            continue
        except AttributeError:
            pass
        if not inspect.ismodule(obj):
            return None
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:
            return None
    return obj


def named(obj) -> bool:
    """Objects whose identity names them (modules, classes, functions, descriptors)."""
    return (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj)
            or isinstance(obj, (property, staticmethod, classmethod)))


def namespaces(what, name, obj):
    """Where the docstring of ``obj`` (documented as ``name``) reads its names, innermost first."""
    if what == "module":
        return [name]
    home = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    out = []
    if home and qual:
        parts = qual.split(".")
        if what == "class":
            out.append(f"{home}.{qual}")
        out += [f"{home}." + ".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
        out.append(home)
    # attributes, properties: no __module__ of their own; the documented name's parents
    parts = name.split(".")
    out += [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
    return out


def qualify(app, what, name, obj, options, lines):
    spaces = namespaces(what, name, obj)

    def full(match):
        role, title, target = match.group(1), match.group(2), match.group(3)
        text = target or title
        if text.startswith(("~", ".", "!")) or text.startswith("tdflow."):
            return match.group(0)
        for space in spaces:
            found = lookup(f"{space}.{text}")
            data = role.strip(":").split(":")[-1] in ("data", "const", "attr", "obj")
            if found is not None and (named(found) or data):
                shown = title.strip() if target else text
                return f"{role}`{shown} <{space}.{text}>`"
        return match.group(0)

    lines[:] = [ROLE.sub(full, line) for line in lines]


def documented(env):
    if not _DOCUMENTED:
        for name, entry in env.domains["py"].objects.items():
            if getattr(entry, "aliased", False) or not name.startswith("tdflow"):
                continue
            obj = lookup(name)
            if obj is not None and named(obj):
                _KEEP.append(obj)
                _DOCUMENTED.setdefault(id(obj), name)
    return _DOCUMENTED


def resolve(app, env, node, contnode):
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("tdflow."):
        return None
    obj = lookup(target)
    name = documented(env).get(id(obj)) if obj is not None and named(obj) else None
    if name is None or name == target:
        return None
    py = env.domains["py"]
    for reftype in (node["reftype"], "obj"):   # "obj": e.g. :func: on what is documented as a method
        ref = py.resolve_xref(env, node["refdoc"], app.builder, reftype, name, node, contnode)
        if ref is not None:
            return ref
    return None


def setup(app):
    app.connect("autodoc-process-docstring", qualify, priority=900)   # after numpydoc (500)
    app.connect("missing-reference", resolve, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
