"""Every file reader against damaged and hand-edited files (issue 13, item 7).

Readers: ``io.load_npz`` (every result), ``DeflationResult.load`` / ``resume`` /
``deflate(resume=True)`` (checkpoints), the sweep's run files, TOML (sweep specs and
``tdflow deflate --config``) and ``tdflow plot``. Truncated, bit-flipped and edited files must give
a ``ValueError`` naming the file (or, for a sweep, a re-run), never a traceback from zlib/NumPy
internals and never a wrong result: a damaged file that still loads must load as the original.
"""
import builtins
import json
import os
import re
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tdflow
from tdflow import cli, io
from tdflow.cli import deflate as cli_deflate
from tdflow.deflation import DeflationResult, Schedule, deflate
from tdflow.sweeps import FILE_KIND, Run, parse_spec, run_id
from tdflow.sweeps.store import read_result as _read_result, result_meta as _result_meta

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def run():
    target = tdflow.Target.orthogonal(6, [0.6, 0.4])
    return deflate(target, 8, Schedule(max_epochs=2, eps=1e-9), 0, n_records=5, progress=False)


@pytest.fixture(scope="module")
def files(run, tmp_path_factory):
    """The bytes of a checkpoint and of a tiny result (small enough to flip every bit)."""
    d = tmp_path_factory.mktemp("good")
    ck = run.save(d / "run").read_bytes()
    tiny = io.save_npz(d / "tiny", {"x": np.arange(3.0)}, {"n": 1}, kind="test").read_bytes()
    return ck, tiny


def _same_as(path, arrays0, meta0, kind):
    """``path`` either fails with a ValueError naming it, or loads as the original."""
    try:
        arrays, meta = io.load_npz(path, kind=kind)
    except ValueError as err:
        assert str(path) in str(err)
        return False
    assert meta == meta0 and arrays.keys() == arrays0.keys()
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], arrays0[k])
        assert arrays[k].dtype == arrays0[k].dtype
    return True


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def _damage(data, good: bytes, kinds=("truncate", "flip", "flips", "garbage"), garbage=64) -> bytes:
    """``good`` truncated, with one or more flipped bits, or with a byte replaced by garbage."""
    kind = data.draw(st.sampled_from(kinds))
    if kind == "truncate":
        return good[: data.draw(st.integers(0, len(good) - 1))]
    if kind == "flip":
        return _flip(good, data.draw(st.integers(0, 8 * len(good) - 1)))
    if kind == "flips":
        for bit in data.draw(st.lists(st.integers(0, 8 * len(good) - 1), min_size=2, max_size=20)):
            good = _flip(good, bit)
        return good
    at = data.draw(st.integers(0, len(good) - 1))
    return good[:at] + data.draw(st.binary(min_size=1, max_size=garbage)) + good[at + 1:]


# -- results (io.load_npz): exhaustive on a tiny file ---------------------------------------------


def _member_data(path):
    """Byte ranges of the compressed contents of each zip member."""
    out = []
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            fh.seek(info.header_offset + 26)
            n, m = np.frombuffer(fh.read(4), "<u2")
            start = info.header_offset + 30 + int(n) + int(m)
            out.append(range(start, start + info.compress_size))
    return out


def test_every_truncation_and_a_flip_in_every_byte_of_a_small_file(files, tmp_path):
    tiny = files[1]
    good = tmp_path / "good.npz"
    good.write_bytes(tiny)
    arrays0, meta0 = io.load_npz(good, kind="test")
    contents = set().union(*_member_data(good))
    path = tmp_path / "bad.npz"
    for n in sorted(set(range(0, len(tiny), 3)) | set(range(len(tiny) - 40, len(tiny)))):
        path.write_bytes(tiny[:n])
        assert not _same_as(path, arrays0, meta0, "test")  # a truncated file never loads
    loaded = []
    for i in range(len(tiny)):
        path.write_bytes(_flip(tiny, 8 * i + i % 8))  # one bit of every byte, all bit positions
        if _same_as(path, arrays0, meta0, "test"):
            loaded.append(i)
    # flips that load (intact: checked above) hit zip fields nobody reads (times, versions,
    # flags, the local headers' copies of the sizes) or the unused last bits of a deflate stream;
    # damage to the contents themselves is caught
    assert len(contents) > len(tiny) // 3 and len(contents & set(loaded)) <= 3 * len(_member_data(good))


# -- checkpoints: random damage, hand edits -------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_damaged_checkpoints(files, tmp_path, run, data):
    bad = _damage(data, files[0])
    path = tmp_path / "ck.npz"
    path.write_bytes(bad)
    try:
        res = DeflationResult.load(path)
    except ValueError as err:
        assert str(path) in str(err)
        with pytest.raises(ValueError, match="ck.npz"):
            tdflow.resume(path, progress=False)
        with pytest.raises(ValueError, match="ck.npz"):
            deflate(run.target, run.m, run.schedule, 0, n_records=5, checkpoint=path, resume=True,
                    progress=False)
        assert path.read_bytes() == bad  # never overwritten by a recomputed run
    else:  # loads only when nothing that matters changed
        assert res.summary() == run.summary()
        np.testing.assert_array_equal(res.W, run.W)


def _rewrite(path, edit):
    """Edit the members of an .npz by hand (what a user with numpy would do), keeping __meta__."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    np.savez_compressed(path, **arrays)


@pytest.mark.parametrize("edit", [
    lambda a: a.__setitem__("W", a["W"] * 1.0001),
    lambda a: a.__setitem__("member", np.zeros_like(a["member"])),
    lambda a: a.pop("records/norms"),
    lambda a: a.__setitem__("__meta__", np.array(str(a["__meta__"]).replace('"t": ', '"t": 1'))),
    lambda a: a.__setitem__("__meta__", np.array(str(a["__meta__"]).replace('"seed": 0', '"seed": 1'))),
    lambda a: a.__setitem__("epochs/beta", a["epochs/beta"][::-1].copy()),
], ids=["W", "member", "drop-array", "meta-t", "meta-seed", "epochs"])
def test_hand_edited_checkpoints_are_refused(run, tmp_path, edit):
    path = run.save(tmp_path / "run")
    _rewrite(path, edit)
    for load in (DeflationResult.load, lambda p: tdflow.resume(p, progress=False)):
        with pytest.raises(ValueError, match=r"run\.npz does not match the checksum"):
            load(path)
    with pytest.raises(ValueError, match="does not match the checksum"):
        deflate(run.target, run.m, Schedule(max_epochs=3, eps=1e-9), 0, n_records=5,
                checkpoint=tmp_path / "run", resume=True, progress=False)


def test_edited_files_with_a_forged_checksum_are_checked_for_consistency(run, tmp_path):
    arrays, meta = io.load_npz(run.save(tmp_path / "run"), kind="deflation")
    options = meta["options"]
    for what, change, edit, msg in [  # the messages of the checks of deflate's arguments
        ("member", dict(member=np.full(run.m, 7)), {}, "member must hold directions -1..1"),
        ("epoch", {}, dict(epoch=5), "epoch 5 does not match the 2 epoch records"),
        ("epoch-bool", {}, dict(epoch=True), "epoch must be an integer >= 0, got True"),
        ("status", {}, dict(status="done"), "status must be one of"),
        ("beta", {}, dict(beta=True), "beta must be a real number, got True"),
        ("beta-0", {}, dict(beta=0.0), "beta must be > 0, got 0"),
        ("t", {}, dict(t=float("nan")), "t must be finite and >= 0, got nan"),
        ("t-text", {}, dict(t="1.5"), "t must be a real number, got '1.5'"),
        ("method", {}, dict(options=dict(options, method="euler2")),
         r"integrator options: method must be one of \('euler', .*got 'euler2'"),
        ("active_tol", {}, dict(options=dict(options, active_tol=-1.0)),
         "integrator options: active_tol must be >= 0, got -1"),
        ("unknown", {}, dict(options=dict(options, stepper=1)),
         r"integrator options: unknown solver options \['stepper'\]"),
        ("lacks", {}, dict(options={k: v for k, v in options.items() if k != "rtol"}),
         r"integrator options lack \['rtol'\]"),
        ("not-a-table", {}, dict(options=[1]), r"integrator options lack \['method'"),
        ("d-text", {}, dict(d="4"), "d must be an integer >= 0, got '4'"),
        ("m-float", {}, dict(m=float(run.m)), "m must be an integer >= 0, got"),
        ("seed-negative", {}, dict(seed=-2), "seed must be >= -1, got -2"),
        ("order-bool", {}, dict(order=True), "order must be an integer >= 1, got True"),
        ("wall_time", {}, dict(wall_time=float("inf")), "wall_time must be finite and >= 0"),
    ]:
        path = io.save_npz(tmp_path / what, dict(arrays, **change), dict(meta, **edit),
                           kind="deflation")
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + msg):
            DeflationResult.load(path)


def test_format_1_files_still_load(run, tmp_path):
    """Files written before the checksum (format 1) are read as before."""
    path = run.save(tmp_path / "new")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["__meta__"]))
    header.pop("digest")
    header["version"] = 1
    arrays["__meta__"] = np.array(json.dumps(header))
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    assert DeflationResult.load(tmp_path / "old.npz").summary() == run.summary()


def test_object_arrays_are_never_pickled(tmp_path):
    path = tmp_path / "x.npz"
    io.save_npz(path, {"ok": np.array([1, 2.5], dtype=object)}, kind="test")  # converted
    assert io.load_npz(path, kind="test")[0]["ok"].dtype == np.float64
    for bad in (np.array([{"a": 1}], dtype=object), np.array([1, None], dtype=object),
                [[1, 2], [3]]):
        with pytest.raises(TypeError, match=r"arrays\['bad'\]"):
            io.save_npz(tmp_path / "y.npz", {"bad": bad}, kind="test")
    assert not (tmp_path / "y.npz").exists()
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}], dtype=object))  # someone else's file
    with pytest.raises(ValueError, match="pickled.npz is not a readable tdflow result file"):
        io.load_npz(tmp_path / "pickled.npz", kind="test")


# -- sweep run files: damage means a re-run, never an abort --------------------------------------


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    params = dict(d=4, m=3)
    r = Run("flow", params, 0, run_id("flow", params, 0))
    res = dict(status="ok", error=None, traceback=None, row={"x": 1.5}, wall_time=0.1,
               worker="local", arrays={"t": np.linspace(0, 1, 7), "W": np.eye(4)})
    path = io.save_npz(tmp_path_factory.mktemp("run") / "r.npz", res["arrays"],
                       _result_meta(r, res), kind=FILE_KIND)
    return r, _result_meta(r, res), path.read_bytes()


@FUZZ
@given(data=st.data())
def test_damaged_sweep_run_files_are_run_again(tmp_path, run_file, data):
    r, meta0, good = run_file
    path = tmp_path / "r.npz"
    path.write_bytes(_damage(data, good, ("truncate", "flip")))
    damaged = []
    meta = _read_result(path, r, damaged)
    if meta is None:
        assert len(damaged) == 1 and "r.npz" in damaged[0]
    else:
        assert meta == meta0 and not damaged


def test_a_sweep_reruns_damaged_and_edited_files(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    from tdflow.sweeps import local_cluster, sweep

    spec = {"kind": "flow", "seeds": 4, "fixed": dict(d=5, r=2, m=8, radius=1e-3, t_end=30.0,
                                                       n_records=11)}
    with local_cluster(2) as cluster, distributed.Client(cluster) as client:
        first = sweep(spec, tmp_path, client=client, verbose=False)
        files = sorted((tmp_path / "runs").glob("*.npz"))
        data = files[0].read_bytes()
        files[0].write_bytes(data[: len(data) // 3])                                # truncated
        files[1].write_bytes(_flip(files[1].read_bytes(), 8 * (len(data) // 2)))    # one bit
        _rewrite(files[2], lambda a: a.__setitem__("W", a["W"] + 1))                # edited
        second = sweep(spec, tmp_path, client=client)
    assert (second.ran, second.skipped) == (3, 1)
    err = capsys.readouterr().err
    assert err.count("tdflow sweep: run again:") == 3 and "does not match the checksum" in err
    def stable(rows):  # as JSON: NaN equals NaN
        return json.dumps([{k: v for k, v in r.items() if k not in ("wall_time", "worker")}
                           for r in rows])

    assert stable(second.rows) == stable(first.rows)


# -- TOML: sweep specs and --config ---------------------------------------------------------------

SPEC_TOML = b'''kind = "flow"
seeds = [0, 3]
name = "fuzz"

[fixed]
d = 6
t_end = 20.0

[grid]
m = [10, 20]
lam = [0.0, 1e-3]
'''

CONFIG_TOML = b'''[problem]
d = 12
r = 3
spectrum = "geo"

[schedule]
gamma = 0.4
max_epochs = 3
'''


@FUZZ
@given(data=st.data())
def test_damaged_toml(tmp_path, data):
    which = data.draw(st.sampled_from(["spec", "config"]))
    good = SPEC_TOML if which == "spec" else CONFIG_TOML
    path = tmp_path / "f.toml"
    path.write_bytes(_damage(data, good, ("truncate", "flip", "garbage"), garbage=8))
    try:
        if which == "spec":
            parsed = parse_spec(path)
            assert parsed.runs and all(r.id == run_id(r.kind, r.params, r.seed) for r in parsed.runs)
        else:
            config = cli_deflate._read_toml(path)
            prob = cli_deflate._problem(dict(cli_deflate.PROBLEM_DEFAULTS, **config.get("problem", {})))
            Schedule.from_dict(config.get("schedule", {}))
            assert set(prob) == set(cli_deflate.PROBLEM_DEFAULTS)
    except (ValueError, TypeError) as err:  # a clear error: the file, or the entry, is named
        msg = str(err)
        assert "f.toml" in msg or "spec" in msg or "must be" in msg or "schedule" in msg, msg


def test_damaged_config_through_the_cli(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_bytes(CONFIG_TOML[:20] + b"\xff\xfe" + CONFIG_TOML[22:])
    assert cli.main(["deflate", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "c.toml is not a TOML file (not UTF-8 text" in capsys.readouterr().err
    path.write_bytes(b"[problem]\nd = 'twelve'\n")
    assert cli.main(["deflate", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "d must be an integer >= 1, got 'twelve' (str)" in capsys.readouterr().err
    assert not list(tmp_path.glob("r*"))


# -- tdflow plot ----------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_tdflow_plot_on_damaged_files(files, tmp_path, capsys, data):
    path = tmp_path / "p.npz"
    path.write_bytes(_damage(data, files[0], ("truncate", "flip")))
    rc = cli.main(["plot", str(path)])
    err = capsys.readouterr().err
    if rc == 0:  # intact contents: the figure is drawn
        assert (tmp_path / "p.png").exists()
    else:
        assert rc == 2 and f"tdflow plot: error: {path}" in err and "Traceback" not in err


def test_tdflow_plot_reads_the_file_once(run, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from tdflow.figure1 import run_figure1

    fig1 = run_figure1([0], d=4, m=6, r=2, t_end=1.0, progress=False)
    paths = [run.save(tmp_path / "run"), fig1.save(tmp_path / "fig1")]
    real_open, real_digest, opened, digests = builtins.open, io._digest, [], []

    def counting_open(file, *args, **kw):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) in map(str, paths):
            opened.append(os.fspath(file))
        return real_open(file, *args, **kw)

    def counting_digest(*args):
        digests.append(1)
        return real_digest(*args)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "_digest", counting_digest)
    for path in paths:
        opened.clear(), digests.clear()
        assert cli.main(["plot", str(path)]) == 0
        assert opened == [str(path)] and len(digests) == 1  # read and hashed once
        assert path.with_suffix(".png").stat().st_size > 0


def test_plot_names_what_it_cannot_draw(tmp_path, capsys):
    io.save_npz(tmp_path / "x", {"a": np.ones(2)}, kind="linear-comparison")
    assert cli.main(["plot", str(tmp_path / "x")]) == 2
    assert "holds a 'linear-comparison' result; tdflow plot draws" in capsys.readouterr().err
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as zf:
        zf.writestr("a.npy", b"\x93NUMPY garbage")
    assert cli.main(["plot", str(tmp_path / "z.npz")]) == 2
    assert "z.npz is not a readable tdflow result file" in capsys.readouterr().err
