"""Bad arguments to the public entry points of tensors, targets, initial states, the power method,
Algorithm 2's schedule/run/resume, files and sweeps (issue 13, item 13).

Every bad value (wrong type, negative seed, string, NaN, Inf, 1e300 where out of range, empty or
ragged arrays, wrong dtype or shape) must raise TypeError or ValueError whose message names the
argument, before any work is done.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tdflow
from tdflow import io
from tdflow.deflation import DeflationResult, Schedule, deflate, resume
from tdflow.sweeps import parse_spec, register_kind, run_one, sweep

NAN, INF = math.nan, math.inf
NOT_INT = ["3", 3.0, 2.5, None, True, 1j, [3], np.float64(3.0), object(), np.array([3]), b"3"]
NOT_REAL = ["0.3", None, True, 1j, [0.3], object(), np.array([0.3, 0.4]), b"1", {}]
NOT_FINITE = [NAN, INF, -INF, np.float32("nan")]
NOT_SEED = [-1, -(2**70), np.int64(-3), 1.5, "0", None, True, object(), [0]]
NOT_PATH = [None, 3, 2.5, object(), [], np.array(["x"]), b""]
NOT_FLAG = ["yes", 1, 0, None, np.array([True, False]), 1.0]
NOT_CALLABLE = ["f", 3, [], object()]


def _bad_arrays(shape, sizes=False):
    """Arrays that must be refused where a finite real array of ``shape`` is expected (``sizes``:
    the shape is fixed, so other sizes are refused too)."""
    full = np.ones(shape)
    nan, inf = full.copy(), full.copy()
    nan.flat[-1], inf.flat[0] = NAN, -INF
    out = ["abc", None, object(), [[1.0, 2.0], [3.0]], full.astype(complex), full.astype(str),
           np.full(shape, None, dtype=object), nan, inf, full[..., None, None],
           np.zeros((0,) * len(shape))]
    if sizes:
        out += [np.ones(tuple(s + 1 for s in shape))]
    return out


NOWHERE = "/dev/null/tdflow"  # cannot be created, not even by root
T = tdflow.Target.orthogonal(4, [0.6, 0.4])
CP = tdflow.CPTensor(np.eye(4)[:, :2], [1.0, 0.5], 4)
SMALL = Schedule(max_epochs=1)


def _with(fn, **fixed):
    return lambda name, v: fn(**{**fixed, name: v})


CASES = []


def case(label, call, name, values):
    CASES.extend((label, call, name, v) for v in values)


# initial states and weights
case("sphere", _with(tdflow.sphere, d=3, m=2, radius=1.0, rng=0), "d", NOT_INT + [0, -1])
case("sphere", _with(tdflow.sphere, d=3, m=2, radius=1.0, rng=0), "m", NOT_INT + [0, -5])
case("sphere", _with(tdflow.sphere, d=3, m=2, radius=1.0, rng=0), "radius", NOT_REAL + NOT_FINITE + [-1.0])
case("sphere", _with(tdflow.sphere, d=3, m=2, radius=1.0, rng=0), "rng", NOT_SEED)
case("geometric_weights", _with(tdflow.geometric_weights, r=3), "r", NOT_INT + [0])
case("geometric_weights", _with(tdflow.geometric_weights, r=3), "ratio", NOT_REAL + NOT_FINITE + [0.0, -2.0, 1e-300])
case("geometric_weights", _with(tdflow.geometric_weights, r=3), "normalize", NOT_FLAG)
case("power_law_weights", _with(tdflow.power_law_weights, r=3), "exponent", NOT_REAL + NOT_FINITE + [-1e300])
case("uniform_weights", _with(tdflow.uniform_weights, r=3), "r", NOT_INT + [-1])
# targets
case("Target", _with(tdflow.Target, U=np.eye(3)[:, :2], a=[0.5, 0.5]), "U",
     _bad_arrays((3, 2)) + [np.full((3, 2), 1e300), 2 * np.eye(3)[:, :2]])
case("Target", _with(tdflow.Target, U=np.eye(3)[:, :2], a=[0.5, 0.5]), "a",
     _bad_arrays((2,), sizes=True) + [[0.5, -0.1], [1.0]])
case("Target", _with(tdflow.Target, U=np.eye(3), a=[1, 1, 1]), "order", NOT_INT + [2, 0, 2**40])
case("Target", _with(tdflow.Target, U=np.eye(3), a=[1, 1, 1]), "normalize", NOT_FLAG)
case("Target.orthogonal", _with(tdflow.Target.orthogonal, d=3, a=[1.0]), "d", NOT_INT + [0])
case("Target.orthogonal", _with(tdflow.Target.orthogonal, d=3, a=[1.0]), "a",
     _bad_arrays((2,)) + [[], [1, 1, 1, 1], [[1.0]]])
case("Target.random_rotation", _with(tdflow.Target.random_rotation, d=3, a=[1.0], rng=0), "a",
     _bad_arrays((2,)) + [[]])
case("Target.random_rotation", _with(tdflow.Target.random_rotation, d=3, a=[1.0], rng=0), "rng", NOT_SEED)
case("Target.random_unit", _with(tdflow.Target.random_unit, d=3, a=[1.0], rng=0), "a", _bad_arrays((2,)))
case("Target.random_unit", _with(tdflow.Target.random_unit, d=3, a=[1.0], rng=0), "rng", NOT_SEED)
# CP tensors
case("CPTensor", _with(tdflow.CPTensor, Z=np.eye(3)[:, :2], c=[1.0, 1.0]), "Z", _bad_arrays((3, 2)))
case("CPTensor", _with(tdflow.CPTensor, Z=np.eye(3)[:, :2], c=[1.0, 1.0]), "c", _bad_arrays((2,), sizes=True))
case("CPTensor", _with(tdflow.CPTensor, Z=np.eye(3), c=[1, 1, 1]), "order", NOT_INT + [1, 2**31])
case("CPTensor.contract", lambda n, v: CP.contract(v), "V", _bad_arrays((4, 2)) + [np.ones(3)])
case("CPTensor.evaluate", lambda n, v: CP.evaluate(v), "V", _bad_arrays((4, 2)) + [np.ones((5, 2))])
case("CPTensor.contract_mixed", lambda n, v: CP.contract_mixed(np.ones((4, 2)), v), "U",
     _bad_arrays((4, 2), sizes=True))
case("CPTensor.inner", lambda n, v: CP.inner(v), "other", [T, 3.0, None, np.eye(4),
                                                           tdflow.CPTensor(np.eye(3), [1, 1, 1])])
case("CPTensor.__mul__", lambda n, v: CP * v, "factor", NOT_FINITE + [1e308 * 4])
# the power method
case("tensor_power_method", _with(tdflow.tensor_power_method, T=T, rank=1), "T", [None, np.eye(3), "T", 3])
case("tensor_power_method", _with(tdflow.tensor_power_method, T=T, rank=1), "rank", NOT_INT + [0])
case("tensor_power_method", _with(tdflow.tensor_power_method, T=T, rank=1), "n_starts", NOT_INT + [0])
case("tensor_power_method", _with(tdflow.tensor_power_method, T=T, rank=1), "n_iters", NOT_INT + [-1])
case("tensor_power_method", _with(tdflow.tensor_power_method, T=T, rank=1), "rng", NOT_SEED)
case("tensor_power_method", _with(tdflow.tensor_power_method, T=T, rank=1), "tol", NOT_REAL + NOT_FINITE + [-1.0])
# Algorithm 2: the schedule
for field in ("delta0", "delta1", "alpha", "gamma", "lam", "eps", "c1", "c2", "margin"):
    case("Schedule", _with(Schedule), field, NOT_REAL + NOT_FINITE + [-1.0, -1e300])
case("Schedule", _with(Schedule), "alpha", [0.0, 1.0, 1e300])
case("Schedule", _with(Schedule), "gamma", [1.0, 1e300])
case("Schedule", _with(Schedule), "delta0", [1e300])  # must stay below delta1
case("Schedule", _with(Schedule), "max_epochs", NOT_INT + [0, -1])
case("Schedule", _with(Schedule), "max_time", ["1", [1.0], True, 0.0, -1.0, NAN, -INF])
case("Schedule", _with(Schedule), "fit_tol", [v for v in NOT_REAL if v is not None] + NOT_FINITE + [-1.0])
case("Schedule.from_dict", lambda n, v: Schedule.from_dict(v), "schedule",
     [[1, 2], "gamma=0.3", None, 3])
case("Schedule.from_dict", lambda n, v: Schedule.from_dict({"gamma": v}), "gamma", ["0.3", None, [0.3]])
# Algorithm 2: the run
DEFLATE = _with(deflate, target=T, m=4, schedule=SMALL, progress=False)
case("deflate", DEFLATE, "target", [None, "T", CP, np.eye(3)])
case("deflate", DEFLATE, "m", NOT_INT + [0, -3])
case("deflate", DEFLATE, "schedule", ["default", {"gamma": 0.3}, 3])
case("deflate", DEFLATE, "rng", NOT_SEED)
case("deflate", DEFLATE, "method", ["RK4", None, 3, np.array(["rk4"]), ["dopri5"]])
for opt in ("rtol", "atol", "active_tol"):
    case("deflate", DEFLATE, opt, NOT_REAL + NOT_FINITE + [-1e-3])
case("deflate", DEFLATE, "h", [v for v in NOT_REAL if v is not None] + NOT_FINITE + [0.0, -0.1])
case("deflate", DEFLATE, "n_records", NOT_INT + [1, 0])
case("deflate", DEFLATE, "checkpoint_every", NOT_INT + [0])
case("deflate", DEFLATE, "checkpoint", NOT_PATH[1:])
case("deflate", DEFLATE, "resume", NOT_FLAG)
case("deflate", DEFLATE, "progress", [v for v in NOT_FLAG if v is not None])
case("deflate", DEFLATE, "callback", NOT_CALLABLE)
case("deflate", DEFLATE, "backend", ["gpu", None, 3, ["cpu"]])
# files
case("resume", lambda n, v: resume(v), "path", NOT_PATH)
case("DeflationResult.load", lambda n, v: DeflationResult.load(v), "path", NOT_PATH)
case("io.load_npz", lambda n, v: io.load_npz(v, kind="x"), "path", NOT_PATH)
case("io.save_npz", lambda n, v: io.save_npz(v, {"x": np.ones(1)}, kind="x"), "path", NOT_PATH)
case("io.save_npz", lambda n, v: io.save_npz(NOWHERE, v, kind="x"), "arrays",
     [None, [1, 2], "x", {"bad": np.array([object()])}, {"bad": [[1], [2, 3]]}, {3: np.ones(1)}])
# sweeps (all refused before a cluster starts or a file is written)
SPEC = {"kind": "flow", "fixed": {"d": 4}}
case("sweep", lambda n, v: sweep(v, NOWHERE), "spec", [None, 3, ["flow"], {"kind": "nope"}])
case("sweep", lambda n, v: sweep(dict(SPEC, seeds=v), NOWHERE), "seeds",
     [-1, 0, "3", 2.5, None, [], [-1], [0.5]])
case("sweep", lambda n, v: sweep(dict(SPEC, threads=v), NOWHERE), "threads", NOT_INT + [0])
case("sweep", lambda n, v: sweep(dict(SPEC, fixed={"d": 4, "nope": 1}), NOWHERE), "nope", [0])
case("sweep", _with(sweep, spec=SPEC, out=NOWHERE), "out", NOT_PATH[1:])
case("sweep", _with(sweep, spec=SPEC, out=NOWHERE), "max_runs", [v for v in NOT_INT if v is not None] + [-1])
case("sweep", _with(sweep, spec=SPEC, out=NOWHERE), "workers", [v for v in NOT_INT if v is not None] + [0])
case("sweep", _with(sweep, spec=SPEC, out=NOWHERE), "scheduler", [3, b"tcp://x", ["tcp://x"]])
case("sweep", _with(sweep, spec=SPEC, out=NOWHERE), "on_result", NOT_CALLABLE)
case("sweep", _with(sweep, spec=SPEC, out=NOWHERE), "progress", [v for v in NOT_FLAG if v is not None])
case("parse_spec", lambda n, v: parse_spec(dict(SPEC, grid=v)), "grid", [{"m": 3}, {"m": []}, [1, 2], {}])
case("run_one", lambda n, v: run_one(v, {}, 0), "kind", ["nope", None, 3])
case("run_one", lambda n, v: run_one("flow", {}, v), "seed", NOT_SEED[:1] + NOT_SEED[3:])
case("register_kind", lambda n, v: register_kind(v, run_one), "name", ["", None, 3])
case("register_kind", lambda n, v: register_kind("k", v), "fn", NOT_CALLABLE)


def _ids():
    return [f"{label}({name}={v!r:.30})" for label, _, name, v in CASES]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.sampled_from(range(len(CASES))))
def test_bad_arguments_are_refused_with_their_name(k):
    label, call, name, value = CASES[k]
    with pytest.raises((TypeError, ValueError)) as info:
        call(name, value)
    assert name in str(info.value), (label, name, value, str(info.value))
    assert "incompatible function arguments" not in str(info.value)  # no pybind11 dump


def test_every_case_once():
    """The property test samples; this runs each of the cases above exactly once."""
    failures = []
    for label, call, name, value in CASES:
        try:
            call(name, value)
            failures.append(f"{label}({name}={value!r}) was accepted")
        except (TypeError, ValueError) as err:
            if name not in str(err):
                failures.append(f"{label}({name}={value!r}): {err}")
        except Exception as err:  # anything else is a bug
            failures.append(f"{label}({name}={value!r}): {type(err).__name__}: {err}")
    assert not failures, "\n".join(failures)
    assert len(CASES) > 500


SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.one_of(
    hnp.arrays(np.float64, SHAPES, elements=st.sampled_from([0.0, 1.0, -2.5, NAN, INF, -INF, 1e300, 1e-300])),
    hnp.arrays(np.float32, SHAPES, elements=st.sampled_from([0.0, 1.0, -2.5, NAN, INF])),
    hnp.arrays(st.sampled_from([np.int64, np.complex128, np.bool_, np.str_]), SHAPES)))
def test_random_arrays_as_target_components(U):
    """Any array is either a valid U (finite, 2-D, unit columns) or refused naming U."""
    try:
        t = tdflow.Target(U, np.ones(U.shape[1]) if U.ndim == 2 else [1.0])
    except (TypeError, ValueError) as err:
        assert "U" in str(err) or "a must" in str(err)
    else:
        assert np.all(np.isfinite(t.U)) and np.allclose(np.linalg.norm(t.U, axis=0), 1.0)


def test_messages_show_the_value_and_what_is_allowed():
    cases = [
        (lambda: tdflow.sphere(3, 2, 1.0, -1), "rng must be a numpy.random.Generator or an integer seed >= 0, got -1"),
        (lambda: deflate(T, 4, SMALL, -1), "rng must be a numpy.random.Generator or an integer seed >= 0, got -1"),
        (lambda: Schedule(gamma="0.3"), "gamma must be a real number, got '0.3' (str)"),
        (lambda: Schedule(gamma=1.0), "gamma must be >= 0 and < 1, got 1"),
        (lambda: Schedule(max_time="x"), "max_time must be a number > 0 (inf: no limit), got 'x' (str)"),
        (lambda: tdflow.Target.orthogonal(3, "abc"), "a must be an array of real numbers, got 'abc' (str)"),
        (lambda: tdflow.Target(np.eye(3), [1, 1, 1], 2**40), "order must be >= 3 and <= 2147483647, got 1099511627776"),
        (lambda: tdflow.Target(np.eye(2) * [[1.0], [np.nan]], [1, 1]), "U contains NaN or Inf (nan at index (1, 0))"),
        (lambda: deflate(T, 4, SMALL, callback=3), "callback must be callable or None, got int"),
        (lambda: resume(None), "path must be a path (str or os.PathLike), got NoneType"),
        (lambda: CP.inner(3.0), "other must be a tdflow.CPTensor, got 3.0 (float)"),
        (lambda: CP.contract([[1, 2], [3]]), "V must be an array of real numbers"),
    ]
    for call, msg in cases:
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        assert msg in str(info.value), str(info.value)
    # an output that cannot be written is an OSError that names the argument, before any work
    with pytest.raises(OSError, match="out: cannot write to the folder /dev/null/tdflow/runs"):
        sweep(SPEC, NOWHERE)
    with pytest.raises(OSError, match="checkpoint: cannot write to the folder /dev/null/tdflow"):
        deflate(T, 4, SMALL, checkpoint=NOWHERE + "/run")
    with pytest.raises(FileNotFoundError, match="spec: cannot read /tdflow-no-such.toml"):
        sweep("/tdflow-no-such.toml")


def test_float32_unit_columns_are_accepted():
    """Columns normalised in float32 have norms 1 +- 1e-7, not 1e-8: accepted, renormalised."""
    rng = np.random.default_rng(0)
    U = rng.standard_normal((50, 3)).astype(np.float32)
    U /= np.linalg.norm(U, axis=0)
    assert np.abs(np.linalg.norm(U.astype(float), axis=0) - 1).max() > 1e-8  # the old test failed
    t = tdflow.Target(U, [1.0, 0.5, 0.25])
    assert t.U.dtype == np.float64 and np.abs(np.linalg.norm(t.U, axis=0) - 1).max() < 1e-15
    np.testing.assert_allclose(t.U, U, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unit norm"):
        tdflow.Target((U * 1.001).astype(np.float32), [1.0, 0.5, 0.25])
