"""Results in notebooks (issue 14, items 4 and 5): a short repr and an escaped HTML summary for every
result, figures that are returned and drawn on the Axes given, tqdm.auto bars, --version."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tdflow
from tdflow import display, progress
from tdflow.beyond_lazy import BeyondLazy
from tdflow.compare import Comparison, ComparisonRow, run_comparison
from tdflow.figure1 import run_figure1
from tdflow.lazy import lazy_fit, lazy_sweep
from tdflow.linear_examples import LinearCase, run_linear_comparison
from tdflow.linear_three_layer import run_three_layer
from tdflow.sweeps import SweepResult

ROOT = Path(__file__).resolve().parents[1]
TARGET = tdflow.Target.orthogonal(6, tdflow.geometric_weights(3, 1.5))


@pytest.fixture(scope="module")
def results():
    """One small instance of every result class."""
    with tdflow.num_threads(1):
        flow = tdflow.GradientFlow(TARGET)
        lin = tdflow.DeepLinearFlow(np.diag([2.0, 1.0]), [2])
        scalar = tdflow.DeepLinearFlow([[1.0]], (1,))
        cases = [LinearCase("bal", scalar, [np.array([[0.1]]), np.array([[0.1]])], 5.0)]
        return dict(
            traj=flow.integrate(tdflow.sphere(6, 4, 1e-3, 0), (0, 30), n_records=7,
                                progress=False),
            linear=lin.integrate(lin.random_layers(0, 0.5), (0, 1), n_records=5, progress=False),
            deflation=tdflow.deflate(tdflow.Target.orthogonal(10, [0.6, 0.25, 0.1, 0.05]), 30,
                                     tdflow.Schedule(), 0, progress=False),
            beyond=BeyondLazy(TARGET, 4, epochs=2, steps=10).run(0, progress=False),
            power=tdflow.tensor_power_method(TARGET, 3, n_starts=3, n_iters=10, rng=0),
            figure1=run_figure1(seeds=[0, 1], t_end=1.0, n_records=11, progress=False),
            comparison=run_comparison(d=4, r=2, ms=(3,), epochs=2, steps=10, t_end=5.0,
                                      n_starts=3, n_iters=5),
            linear_comparison=run_linear_comparison(cases, n_records=21, progress=False),
            three_layer=run_three_layer(n=3, m=1, h1=4, h2=4, draws=2, progress=False),
            sweep=SweepResult(out=Path("out"), rows=[dict(id="a", status=tdflow.Status.OK),
                                                     dict(id="b", status=tdflow.Status.ERROR)],
                              ran=2, skipped=0, errors=1, pending=0, files=[], wall_time=1.5),
            lazy_fit=lazy_fit(TARGET, tdflow.sphere(6, 4, 1.0, 0)),
            lazy_sweep=lazy_sweep(TARGET, [2, 4], 0),
        )


def test_every_result_has_a_short_repr_and_an_html_table(results):
    for name, res in results.items():
        text, page = repr(res), res._repr_html_()
        assert text.startswith(type(res).__name__ + "(") and text.endswith(")"), name
        assert "array(" not in text and len(text) < 400, (name, text)
        assert page.startswith('<table class="tdflow">') and page.count("<table") >= 1, name
        assert f"<b>{type(res).__name__}</b>" in page, name
        # the same (name, value) pairs in both
        for key, value in res._summary():
            cell = display.short(value)
            assert f"{key}={cell}" in text, (name, key)
            assert f"<td>{key}</td><td>{cell}</td>" in page.replace("&#x27;", "'"), (name, key)


def test_html_holds_the_numbers(results):
    traj = results["traj"]
    page = traj._repr_html_()
    assert "<td>status</td><td>finished</td>" in page
    assert f"<td>n_rhs</td><td>{traj.n_rhs}</td>" in page
    assert f"<td>residual_norm</td><td>{traj.residual_norm[-1]:.4g}</td>" in page
    assert "<td>d</td><td>6</td>" in page and "<td>m</td><td>4</td>" in page
    res = results["deflation"]
    page = res._repr_html_()
    assert f"<td>epochs</td><td>{res.n_epochs}</td>" in page
    assert "<td>status</td><td>recovered</td>" in page
    # the per-epoch table: one row per epoch with its beta and residual
    for s in range(res.n_epochs):
        assert (f"<tr><td>{s}</td><td>{res.epochs['beta'][s]:.4g}</td>") in page
        assert f"<td>{res.epochs['residual_norm'][s]:.4g}</td></tr>" in page
    cmp = results["comparison"]
    page = cmp._repr_html_()
    assert "<th>method</th>" in page
    for row in cmp.rows:
        assert f"<td>{row.method}</td><td>{row.m}</td><td>{row.error:.4g}</td>" in page
    assert "<td>error</td><td>1</td>" in results["sweep"]._repr_html_()


def test_html_is_escaped():
    cmp = Comparison([ComparisonRow("power", 2, 0.5, 10.0, 0.1, "<script>alert(1)</script>")],
                     dict(d=3, r=1, order=3, ms=[2], seed=0))
    page = cmp._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert display.html_table("a & <b>", [("x<", 1)]).count("&lt;") == 2


def test_long_tables_are_cut_in_html():
    rows = [ComparisonRow("lazy", m, 1.0 / m, 1.0, 0.0) for m in range(1, 31)]
    page = Comparison(rows, dict(d=3, r=1, order=3, ms=list(range(1, 31)), seed=0))._repr_html_()
    assert page.count("<td>lazy</td>") == display.ROWS_SHOWN
    assert "... 10 more rows" in page


def test_repr_of_a_broken_result_does_not_raise():
    broken = tdflow.Trajectory(t=np.zeros(0), loss=np.zeros(0), states=None,
                               status=tdflow.Status.NON_FINITE, t_final=0.0, method="rk4",
                               n_steps=0, n_rhs=0, n_rejected=0, wall_time=0.0,
                               residual_norm=np.zeros(0), directional_residual=np.zeros((0, 2)),
                               W=np.zeros((3, 2)), a=np.ones(2))
    text = repr(broken)
    assert text.startswith("<Trajectory (no summary:") or text.startswith("Trajectory(")
    assert "Trajectory" in broken._repr_html_()


def test_short_formats():
    assert display.short(tdflow.Status.OK) == "ok" and display.short(np.float64(1 / 3)) == "0.3333"
    assert display.short(np.int64(7)) == "7" and display.short(np.bool_(True)) == "True"
    assert display.short(np.arange(3)) == "[0, 1, 2]"
    assert display.short(np.zeros((3, 4))) == "array(3, 4) float64"
    assert display.short(list(range(20))) == "[20 items]"


# -- figures -------------------------------------------------------------------------------

@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def _figures(results):
    """(name, n panels, the plotting call with axes=...)"""
    from tdflow.linear_examples import plot_linear_comparison
    from tdflow.linear_three_layer import plot_three_layer
    from tdflow.plot import plot_deflation, plot_figure1

    return [
        ("figure1", 3, lambda path=None, **kw: plot_figure1(results["figure1"], path, **kw), "axes"),
        ("deflation", 4, lambda path=None, **kw: plot_deflation(results["deflation"], path, **kw),
         "axes"),
        ("linear", 2, lambda path=None, **kw: plot_linear_comparison(results["linear_comparison"],
                                                                      path, **kw), "axes"),
        ("three_layer", 1, lambda path=None, **kw: plot_three_layer(results["three_layer"], path,
                                                                    **kw), "ax"),
        ("compare", 1, lambda path=None, **kw: results["comparison"].plot(path, **kw), "ax"),
    ]


def test_plots_return_their_figure(results, plt):
    from matplotlib.figure import Figure

    for name, n, draw, _ in _figures(results):
        fig = draw()
        assert isinstance(fig, Figure), name
        assert len(fig.axes) == n and all(ax.has_data() for ax in fig.axes), name


def test_plots_draw_on_the_axes_given(results, plt, tmp_path):
    for name, n, draw, arg in _figures(results):
        fig, axes = plt.subplots(2, 3)  # more panels than needed: tdflow uses those it is given
        mine = list(axes.ravel()[:n])
        given = mine[0] if arg == "ax" else mine
        out = draw(**{arg: given})
        assert out is fig, name
        assert all(ax.has_data() for ax in mine), name
        assert not any(ax.has_data() for ax in axes.ravel()[n:]), name
        assert fig._suptitle is None, name  # the caller's figure keeps its own title
        # with a path, the caller's figure is written and stays open
        path = tmp_path / f"{name}.png"
        draw(path, **{arg: given})
        assert path.stat().st_size > 1000 and plt.fignum_exists(fig.number), name
        plt.close(fig)
        # tdflow's own figure is closed once written (as before)
        own = draw(tmp_path / f"{name}-own.png")
        assert not plt.fignum_exists(own.number), name


def test_wrong_axes_are_refused(results, plt):
    fig, axes = plt.subplots(1, 2)
    for name, n, draw, arg in _figures(results):
        wrong = axes[0] if n > 1 else list(axes)
        with pytest.raises(ValueError, match=rf"{arg} must be .*matplotlib Axes, got"):
            draw(**{arg: wrong})
    with pytest.raises(ValueError, match="axes must be 3 matplotlib Axes, got 3 object"):
        _figures(results)[0][2](axes=[axes[0], axes[1], "x"])


# -- progress bars --------------------------------------------------------------------------

def test_bars_are_tqdm_auto():
    from tqdm.auto import tqdm

    assert progress.tqdm is tqdm
    bar = progress.count_bar(3, "runs", enabled=False)
    assert isinstance(bar, tqdm) and bar.disable and bar.total == 3
    bar.close()
    # tqdm's notebook bar shows itself when disable is None; tdflow passes None by default
    assert progress.tqdm_disable(None) is None and progress.tqdm_disable(True) is False


def test_every_bar_is_made_in_progress_py():
    made = [f"{path.name}: {line.strip()}"
            for path in sorted((ROOT / "python" / "tdflow").rglob("*.py")) if path.name != "progress.py"
            for line in path.read_text(encoding="utf-8").splitlines()
            if re.search(r"\b(tqdm|trange)\(", line)]
    assert made == []
    text = (ROOT / "python" / "tdflow" / "progress.py").read_text(encoding="utf-8")
    assert "from tqdm.auto import tqdm" in text and len(re.findall(r"\btqdm\(", text)) >= 3


# -- version --------------------------------------------------------------------------------

def test_console_script_prints_the_version(capsys):
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # no TOML reader before 3.11
    entry = re.search(r'^\[project\.scripts\]\ntdflow = "([\w.:]+)"$', text, re.M).group(1)
    assert entry == "tdflow.cli:main"
    module, func = entry.split(":")
    main = getattr(__import__(module, fromlist=[func]), func)
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"tdflow {tdflow.__version__}\n"
    # the installed script, where this environment has one (an installed tdflow: CI)
    script = shutil.which("tdflow", path=os.path.dirname(sys.executable))
    if script is not None:
        out = subprocess.run([script, "--version"], capture_output=True, check=True).stdout
        assert out.decode() == f"tdflow {tdflow.__version__}\n"
