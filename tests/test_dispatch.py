"""The core built per CPU level (tdflow._dispatch): the choice, the CPU probe, and every level the
CPU runs giving the dispatched results, each level forced by TDFLOW_CPU_LEVEL in a subprocess.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tdflow
from tdflow import _cpu, _dispatch
from tdflow._dispatch import X86_FEATURES, choose, missing_features, module_name

ALL_X86 = {f: True for feats in X86_FEATURES.values() for f in feats}
NO_AVX512 = {f: not f.startswith("avx512") for f in ALL_X86}
X86_BUILT = ("x86-64-v4", "x86-64-v3", "x86-64-v2")


def test_choice_follows_the_features():
    c = choose(None, X86_BUILT, ALL_X86)
    assert (c.level, c.reason) == ("x86-64-v4", "the best level this CPU runs (TDFLOW_CPU_LEVEL not set)")
    c = choose("", X86_BUILT, NO_AVX512)
    assert (c.level, c.runnable) == ("x86-64-v3", ("x86-64-v3", "x86-64-v2"))
    no_fma = dict(NO_AVX512, fma=False)
    assert choose("auto", X86_BUILT, no_fma).level == "x86-64-v2"
    assert missing_features("x86-64-v4", no_fma) == ["fma", "avx512f", "avx512bw", "avx512cd",
                                                     "avx512dq", "avx512vl"]
    # a native build wins under auto; baseline (aarch64) needs no x86 feature
    assert choose("auto", ("native",) + X86_BUILT, NO_AVX512).level == "native"
    assert choose("auto", ("baseline",), {}).level == "baseline"


@pytest.mark.parametrize("value, level", [("v3", "x86-64-v3"), ("X86-64-V2", "x86-64-v2"),
                                          ("x86_64_v4", "x86-64-v4"), (" auto ", "x86-64-v4")])
def test_forced_level_and_its_spellings(value, level):
    c = choose(value, X86_BUILT, ALL_X86)
    assert c.level == level
    assert c.reason == (f"TDFLOW_CPU_LEVEL={value}" if "auto" not in value else
                        f"the best level this CPU runs (TDFLOW_CPU_LEVEL={value})")


def test_refusals_name_the_reason():
    with pytest.raises(ImportError, match=r"lacks avx512f, avx512bw, avx512cd, avx512dq, "
                                          r"avx512vl, which x86-64-v4 needs; it runs x86-64-v3, x86-64-v2"):
        choose("v4", X86_BUILT, NO_AVX512)
    with pytest.raises(ImportError, match="has no native core; it has x86-64-v4, x86-64-v3"):
        choose("native", X86_BUILT, ALL_X86)
    with pytest.raises(ImportError, match="'avx9' is not a CPU level; allowed: auto, native"):
        choose("avx9", X86_BUILT, ALL_X86)
    old = dict(ALL_X86, sse4_2=False, popcnt=False)
    with pytest.raises(ImportError, match="needs at least x86-64-v2, but this CPU lacks popcnt, "
                                          "sse4_2. Build from source"):
        choose("auto", X86_BUILT, old)
    with pytest.raises(ImportError, match="no compiled core"):
        choose("auto", (), ALL_X86)


@pytest.mark.skipif(_cpu.arch != "x86_64", reason="x86-64 feature probe")
def test_cpu_probe_agrees_with_the_compiler_and_the_kernel():
    feats = _cpu.features()
    assert set(feats) >= set(ALL_X86)
    for level, supported in _cpu.compiler_levels().items():  # GCC >= 12: __builtin_cpu_supports
        assert (not missing_features(level, feats)) == supported, level
    if os.path.exists("/proc/cpuinfo"):  # Linux names the same flags, OS support included
        with open("/proc/cpuinfo") as fh:
            flags = next(line for line in fh if line.startswith("flags")).split(":")[1].split()
        assert {f for f, on in feats.items() if on} == set(feats) & set(flags)


def test_dispatched_core_is_tdflow_core():
    choice = _dispatch.CHOICE
    assert tdflow._core.__name__ == f"tdflow.{module_name(choice.level)}"
    assert sys.modules["tdflow._core"] is tdflow._core
    assert choice.level in choice.runnable and set(choice.runnable) <= set(choice.built)
    if "TDFLOW_CPU_LEVEL" not in os.environ:
        assert choice.level == choice.runnable[0]


# One RHS on a dense state, and a short dopri5 run; printed as JSON by a fresh interpreter.
_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    {prelude}
    import tdflow
    target = tdflow.Target.random_rotation(12, tdflow.geometric_weights(4, 1.5), rng=1)
    flow = tdflow.GradientFlow(target)
    W = tdflow.sphere(12, 300, 1.0, 2)
    tr = flow.integrate(tdflow.sphere(12, 40, 0.3, 3), (0, 3), method="dopri5", rtol=1e-8)
    print(json.dumps({{"module": tdflow._core.__name__, "rhs": flow.rhs(W).ravel().tolist(),
                      "loss": tr.loss.tolist(), "W": tr.W.ravel().tolist(), "n_rhs": tr.n_rhs}}))
""")

# Makes the subprocess see a CPU without AVX-512: a stand-in tdflow._cpu, installed before
# tdflow imports the real one.
_NO_AVX512 = textwrap.dedent("""
    import importlib.machinery, importlib.util, os
    pkg = importlib.util.find_spec("tdflow").submodule_search_locations[0]
    files = [os.path.join(pkg, "_cpu" + s) for s in importlib.machinery.EXTENSION_SUFFIXES]
    spec = importlib.util.spec_from_file_location("tdflow._cpu", next(filter(os.path.exists, files)))
    cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu)
    feats = {k: v and not k.startswith("avx512") for k, v in cpu.features().items()}
    cpu.features = lambda: feats
    sys.modules["tdflow._cpu"] = cpu
""")


def _probe(level, prelude=""):
    env = {k: v for k, v in os.environ.items() if k != "TDFLOW_CPU_LEVEL"}
    if level is not None:
        env["TDFLOW_CPU_LEVEL"] = level
    out = subprocess.run([sys.executable, "-c", _PROBE.format(prelude=prelude)], env=env,
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise ImportError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout)


def _assert_same(got, ref):
    assert got["n_rhs"] == ref["n_rhs"]
    for key in ("rhs", "loss", "W"):
        a, b = np.asarray(got[key]), np.asarray(ref[key])
        assert np.linalg.norm(a - b) <= 1e-12 * np.linalg.norm(b), key


@pytest.fixture(scope="module")
def dispatched():
    return _probe(None)


@pytest.mark.parametrize("level", _dispatch.CHOICE.built)
def test_every_level_this_cpu_runs_gives_the_dispatched_results(level, dispatched):
    if level not in _dispatch.CHOICE.runnable:
        pytest.skip(f"this CPU lacks {', '.join(missing_features(level, _cpu.features()))}")
    got = _probe(level)
    assert got["module"] == f"tdflow.{module_name(level)}"
    _assert_same(got, dispatched)


@pytest.mark.skipif(not {"x86-64-v4", "x86-64-v3"} <= set(_dispatch.CHOICE.runnable),
                    reason="needs the x86-64-v3 and v4 cores and a CPU with AVX-512")
def test_a_cpu_without_avx512_gets_v3_and_a_clear_error_for_v4(dispatched):
    got = _probe(None, _NO_AVX512)
    assert got["module"] == "tdflow._core_x86_64_v3"
    _assert_same(got, dispatched)
    with pytest.raises(ImportError, match="TDFLOW_CPU_LEVEL='v4': this CPU lacks avx512f"):
        _probe("v4", _NO_AVX512)
