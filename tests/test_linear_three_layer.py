"""The three-layer experiment of Min, Vidal, Mallada 2023 (tdflow.linear_three_layer, the CLI
command ``tdflow linear three-layer``) on small cases."""
import math

import numpy as np
import pytest

import tdflow
from tdflow import cli
from tdflow import linear_bounds as lb
from tdflow.linear_three_layer import run_three_layer, scheme_std


def test_scheme_variances_are_the_papers():
    n, h1, h2, m = 5, 200, 300, 2
    assert scheme_std("ntk", n, h1, h2, m) == (1.0, 1.0, 1.0)
    assert np.allclose(np.square(scheme_std("fan-in", n, h1, h2, m)), [1 / n, 1 / h1, 1 / h2])
    assert np.allclose(np.square(scheme_std("fan-out", n, h1, h2, m)), [1 / h1, 1 / h2, 1 / m])
    with pytest.raises(ValueError, match="scheme must be one of"):
        scheme_std("xavier", n, h1, h2, m)


def test_small_run_records_theorem2_and_observed_rates():
    n, m, h1, h2 = 3, 1, 12, 12
    res = run_three_layer(n=n, m=m, h1=h1, h2=h2, draws=3, seed=5, progress=False)
    assert res.schemes == ["ntk", "fan-in", "fan-out"] and res.bound.shape == (3, 3)
    assert res.holds() and np.all(res.rate_min >= res.bound * (1 - 1e-8))
    assert np.all(res.ntk_rate >= res.bound * (1 - 1e-9))  # 2 lambda_min(T(0)) >= 2 Delta*
    np.testing.assert_allclose(res.bound, 2 * res.delta_star)
    # draw k of a scheme is rebuilt from the seed (seed, k); NTK values divided by sqrt(m h1 h2)
    for i, scheme in enumerate(res.schemes):
        rng = np.random.default_rng([5, 2])
        W1, W2, W3 = (s * rng.standard_normal(sh) for s, sh in
                      zip(scheme_std(scheme, n, h1, h2, m), [(n, h1), (h1, h2), (h2, m)]))
        scale = 1 / math.sqrt(m * h1 * h2) if scheme == "ntk" else 1.0
        want = max(lb.three_layer_alpha(W2 @ W2.T - W1.T @ W1, W2.T @ W2 - W3 @ W3.T, n, m), 0.0)
        assert res.delta_star[i, 2] == pytest.approx(want * scale, rel=1e-12, abs=1e-15)
    assert "fan-out" in res.summary() and "holds in every draw" in res.summary()


def test_bound_close_for_scalar_output_and_loose_for_n5():
    """App. A: with Fan-out and n = m = 1 the bound is close to the actual rate; with n = 5 it is
    loose (here at widths 10 and 20 instead of the paper's 100-500)."""
    one = run_three_layer(n=1, m=1, h1=10, h2=20, draws=6, schemes=["fan-out"], progress=False)
    ratio = one.rate_min[0] / one.bound[0]
    assert np.all(ratio >= 1 - 1e-8) and np.all(ratio < 2.0)
    five = run_three_layer(n=5, m=1, h1=10, h2=20, draws=6, schemes=["fan-out"], progress=False)
    with np.errstate(divide="ignore"):
        assert np.median(five.rate_min[0] / five.bound[0]) > 3.0


def test_cli_three_layer(tmp_path, capsys):
    args = ["linear", "three-layer", "--out", str(tmp_path), "--n", "3", "--h1", "10", "--h2", "10",
            "--draws", "2", "--quiet"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "three-layer, n=3 m=1 h1=10 h2=10, 2 draws per scheme" in out
    assert (tmp_path / "three_layer.png").stat().st_size > 10000
    arrays, meta = tdflow.io.load_npz(tmp_path / "three_layer.npz", kind="linear-three-layer")
    assert arrays["bound"].shape == (3, 2) and meta["schemes"] == ["ntk", "fan-in", "fan-out"]
    assert meta["h1"] == 10 and meta["draws"] == 2 and meta["horizon"] == 20.0
    assert np.all(arrays["rate_min"] >= arrays["bound"] * (1 - 1e-8))
    with pytest.raises(SystemExit):
        cli.main(["linear", "three-layer", "--help"])
    help_text = capsys.readouterr().out
    assert "(default: 200)" in help_text and "(default: 100)" in help_text and "Theorem 2" in help_text
    assert cli.main(["linear", "three-layer", "--draws", "0", "--out", str(tmp_path)]) == 2
    assert "draws must be >= 1" in capsys.readouterr().err
    assert cli.main(["linear", "three-layer", "--horizon", "1e300", "--out", str(tmp_path)]) == 2
    assert "horizon must be <= 40" in capsys.readouterr().err
    assert cli.main(["linear", "three-layer", "--rtol", "nan", "--out", str(tmp_path)]) == 2
    assert "rtol must be finite" in capsys.readouterr().err
