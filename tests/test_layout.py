"""The shape of the package (issue 17): short files, a README layout section that matches the
tree, a public namespace that holds what users call."""
import re
from pathlib import Path

import tdflow

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "python" / "tdflow"
LONG = 400  # lines; a longer file says why at its top


def _layout() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("\n## Layout\n"):]
    return section[:section.index("\n## ", 1)]


def _tokens(ext: str):
    return set(re.findall(r"[\w./]+\." + ext + r"\b", _layout()))


def test_no_python_file_over_400_lines_without_a_reason():
    for path in sorted(PKG.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > LONG:
            head = "\n".join(lines[:12])
            assert f"Longer than {LONG} lines" in head, f"{path.relative_to(ROOT)}: {len(lines)} lines"


def test_readme_layout_names_every_package_file_and_only_those():
    files = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*")
             if p.is_file() and p.suffix in (".py", ".pyi", ".typed") and "__pycache__" not in p.parts}
    named = {t for t in _tokens("py") | _tokens("pyi") | _tokens("typed")
             if not t.startswith(("tests/", "bench/"))}
    assert files - named == set(), "files the README's layout section leaves out"
    assert named - files == set(), "files the README's layout section names but the tree lacks"


def test_readme_layout_names_every_core_file_and_only_those():
    files = {p.name for p in (ROOT / "cpp").rglob("*") if p.suffix in (".hpp", ".cpp")}
    named = {Path(t).name for t in _tokens("hpp") | _tokens("cpp")}
    assert files == named


def test_the_public_names():
    assert len(tdflow.__all__) == len(set(tdflow.__all__)) <= 30
    for name in tdflow.__all__:
        assert getattr(tdflow, name) is not None
    public = {n for n in vars(tdflow) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(tdflow, n)).__name__ == "module"}
    assert public - modules - set(tdflow.__all__) == set()  # no name beside __all__
    # names no longer at the top level stay importable from their modules
    from tdflow.beyond_lazy import BeyondLazyResult, VariantState, variant_loss  # noqa: F401
    from tdflow.lazy import LazyFit, LazySweep, lazy_features, symmetric_dim  # noqa: F401
    from tdflow.linear import RateBound  # noqa: F401
    from tdflow.power import PowerResult  # noqa: F401
