"""The command line: --version, defaults in every help text, the deflate progress bar (issue 13,
item 16)."""
import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

import tdflow
from tdflow import cli, progress
from tdflow.cli import deflate as cli_deflate
from tdflow.deflation import Schedule, deflate


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"tdflow {tdflow.__version__}\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-m", "tdflow", "--version"], capture_output=True,
                         env=env, check=True).stdout.decode()
    assert out == f"tdflow {tdflow.__version__}\n"


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_every_help_text_shows_its_default():
    parser = cli.build_parser()
    subs = _subparsers(parser)
    assert set(subs) == {"fig1", "linear", "compare", "deflate", "plot", "sweep", "doctor"}
    schedule = cli_deflate._schedule_defaults()
    checked = 0
    for name, sub in subs.items():
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            text = " ".join(sub._get_formatter()._expand_help(action).split()) if action.help else ""
            if name == "deflate" and action.dest in cli_deflate.PROBLEM_DEFAULTS:
                assert f"(default: {cli_deflate.PROBLEM_DEFAULTS[action.dest]})" in text, text
            elif name == "deflate" and action.dest in schedule:
                assert f"(default: {schedule[action.dest]})" in text, text
            elif action.default not in (None, False):
                help_line = " ".join(sub.format_help().split())
                assert f"{text} (default: " in help_line or "(default" in text, (name, text)
            else:
                continue  # a flag, or an option whose help says where its value comes from
            checked += 1
    assert checked >= 50
    deflate_help = " ".join(subs["deflate"].format_help().split())
    assert "--gamma GAMMA beta <- beta (1 - gamma) each epoch (default: 0.3)" in deflate_help
    assert "--fit-tol FIT_TOL fitted when a_i - a_hat_i <= tol: 'paper' (2 lam), 'eps-floor' (max(2 lam, eps)) or a number (default: paper)" \
        in deflate_help
    assert "--d D dimension (default: 20)" in deflate_help
    assert "(default: None)" not in deflate_help


def test_deflate_progress_bar_covers_each_epoch(monkeypatch, capsys):
    """The ETA was for max_epochs epochs of the first epochs' length; the bar now runs to the
    end of the current epoch, which the schedule fixes exactly."""
    seen = []
    start, done = progress.EpochBar.start, progress.EpochBar.done

    def record_start(self, res, end):
        seen.append(["start", res.epoch, res.t, end])
        start(self, res, end)

    def record_done(self, res):
        done(self, res)
        seen.append(["done", res.epoch - 1, self.bar.n, self.bar.total])

    monkeypatch.setattr(progress.EpochBar, "start", record_start)
    monkeypatch.setattr(progress.EpochBar, "done", record_done)
    target = tdflow.Target.orthogonal(12, tdflow.geometric_weights(4, 2.0))
    res = deflate(target, 30, Schedule(max_epochs=4, eps=1e-9), 0, progress=True)
    e = res.epochs
    ends = e["t_start"] + e["t2"]  # t2: the epoch end (the paper's t2), from its start
    starts = [s for s in seen if s[0] == "start"]
    dones = [s for s in seen if s[0] == "done"]
    assert [s[1] for s in starts] == [0, 1, 2, 3] and len(dones) == 4
    np.testing.assert_allclose([s[2] for s in starts], e["t_start"], rtol=0, atol=0)
    np.testing.assert_allclose([s[3] for s in starts], ends, rtol=1e-12)
    np.testing.assert_allclose([s[2] for s in dones], ends, rtol=1e-12)  # each epoch: 100%
    np.testing.assert_allclose([s[3] for s in dones], ends, rtol=1e-12)
    err = capsys.readouterr().err
    assert "epoch 3 (at most 4)" in err and "epoch ends in" in err and "fit=" in err
    lengths = np.diff(np.r_[0.0, ends])
    assert np.all(lengths[1:] > lengths[:-1])  # epochs grow: why a bar over epochs misled
