"""The Figure 1 reproduction, its files and the command line."""
import numpy as np
import pytest

from tdflow import cli, io
from tdflow.figure1 import Figure1Result, run_figure1


@pytest.fixture(scope="module")
def fig1():
    return run_figure1(seeds=range(5), method="rk4", h=0.05, n_records=501, progress=False)


def test_fits_directions_from_largest_to_smallest(fig1):
    assert fig1.fitted_in_order()
    np.testing.assert_array_equal(fig1.fit_orders, np.tile(np.arange(5), (5, 1)))
    # the staircase: fit times strictly increase, well separated, inside the run
    gaps = np.diff(fig1.fit_times, axis=1)
    assert np.all(gaps > 5.0)
    assert np.all(fig1.fit_times < 200)
    # at the end every direction is fitted and the loss has collapsed from its plateau
    assert np.all(fig1.directional_residual[:, -1, :] < 1e-6)
    assert np.all(fig1.loss[:, -1] < 1e-12 * fig1.loss[:, 0])
    # between two fit times the loss sits on a plateau: half-way values are above the next fit's
    p0 = 0.5 * np.sum(fig1.a ** 2)
    assert fig1.loss[0, 0] == pytest.approx(p0, rel=1e-12)


def test_adaptive_run_agrees_with_rk4(fig1):
    ad = run_figure1(seeds=[0], method="dopri5", rtol=1e-8, n_records=501, progress=False)
    np.testing.assert_allclose(ad.fit_times[0], fig1.fit_times[0], atol=0.51)
    assert ad.n_rhs[0] < fig1.n_rhs[0] / 3


def test_save_load_roundtrip_and_rejections(fig1, tmp_path):
    path = fig1.save(tmp_path / "run.npz")
    back = Figure1Result.load(path)
    np.testing.assert_array_equal(back.loss, fig1.loss)
    np.testing.assert_array_equal(back.fit_times, fig1.fit_times)
    assert back.params == fig1.params
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable tdflow result"):
        Figure1Result.load(tmp_path / "junk.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable tdflow result"):
        Figure1Result.load(truncated)
    other = io.save_npz(tmp_path / "other.npz", {"x": np.ones(2)}, kind="something-else")
    with pytest.raises(ValueError, match="holds a 'something-else' result"):
        Figure1Result.load(other)
    np.savez(tmp_path / "plain.npz", x=np.ones(2))
    with pytest.raises(ValueError, match="no metadata"):
        Figure1Result.load(tmp_path / "plain.npz")


def test_plot_writes_png(fig1, tmp_path):
    pytest.importorskip("matplotlib")
    from tdflow.plot import plot_figure1

    out = tmp_path / "fig.png"
    plot_figure1(fig1, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000


def test_cli_fig1(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc = cli.main(["fig1", "--out", str(tmp_path), "--seeds", "2", "--method", "dopri5", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "largest to smallest" in text
    assert (tmp_path / "fig1.png").exists()
    res = Figure1Result.load(tmp_path / "fig1.npz")
    assert res.seeds.tolist() == [0, 1] and res.fitted_in_order()


def test_cli_reports_bad_arguments(tmp_path, capsys):
    rc = cli.main(["fig1", "--out", str(tmp_path), "--r", "20", "--no-plot", "--quiet"])
    assert rc == 2
    assert "r must be <= d" in capsys.readouterr().err


def test_python_m_entry_point(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "tdflow", "fig1", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--seeds" in proc.stdout
