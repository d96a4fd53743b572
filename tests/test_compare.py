"""The comparison of the methods and ``tdflow compare``."""
import numpy as np
import pytest

from tdflow import cli
from tdflow.compare import METHODS, run_comparison


@pytest.fixture(scope="module")
def comparison():
    return run_comparison(d=6, r=2, order=3, ms=(3, 10), seed=0, epochs=12, steps=100, t_end=60.0)


def test_rows_and_what_they_show(comparison):
    rows = {(row.method, row.m): row for row in comparison.rows}
    assert {row.method for row in comparison.rows} == set(METHODS)
    need = comparison.params["lazy_m_needed"]
    assert need == 10  # C(8, 3) / 6 rounded up
    # lazy training: hopeless with few columns, exact once m d reaches the symmetric dimension
    assert rows[("lazy", 10)].error < 1e-10
    # the beyond-lazy variant fits the rank-2 target with 3 columns already; lazy cannot
    assert rows[("beyond-lazy", 3)].error < 1e-3
    assert rows[("lazy", 3)].error > 100 * rows[("beyond-lazy", 3)].error
    assert rows[("gradient-flow", 10)].error < 1e-4
    # Lemma 5 checked at every step: the note gives max ||P_B U||_F^2 / ((m+K) delta^2) <= 1
    for m in (3, 10):
        note = rows[("beyond-lazy", m)].note
        assert "(Lemma 5)" in note and 0 < float(note.split("=")[1].split()[0]) <= 1
    power = comparison.select("power")
    assert len(power) == 1 and power[0].m == 2 and power[0].error < 1.0
    for row in comparison.rows:
        assert np.isfinite(row.error) and row.work > 0 and row.wall_time >= 0


def test_table_and_plot(comparison, tmp_path):
    text = comparison.table()
    assert "method" in text and "beyond-lazy" in text and "lazy needs m >= 10" in text
    assert len(text.splitlines()) == 3 + len(comparison.rows)
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    for x in ("m", "work"):
        fig = comparison.plot(tmp_path / f"cmp-{x}.png", x=x)
        assert (tmp_path / f"cmp-{x}.png").stat().st_size > 0
        import matplotlib.pyplot as plt

        plt.close(fig)
    with pytest.raises(ValueError, match="x must be 'm' or 'work'"):
        comparison.plot(x="time")


def test_cli_compare(capsys):
    code = cli.main(["compare", "--d", "5", "--ms", "2", "4", "--methods", "lazy", "power",
                     "--starts", "5", "--iters", "10"])
    out = capsys.readouterr().out
    assert code == 0
    assert "lazy" in out and "power" in out and "gradient-flow" not in out
    assert cli.main(["compare", "--d", "5", "--ms", "0"]) == 2
    assert "m must be >= 1" in capsys.readouterr().err


def test_validation():
    with pytest.raises(ValueError, match="methods must be among"):
        run_comparison(methods=["nope"])
    with pytest.raises(ValueError, match="ms must not be empty"):
        run_comparison(ms=())
