"""Run code that might hang so that a hang fails the test instead of blocking the suite.

``run_python`` runs a snippet in a fresh interpreter (its own process group, killed whole on
timeout); ``hang_guard`` (and the ``watchdog`` fixture around a whole test) aborts the test
process with every thread's traceback if it runs far past any sane duration. Neither measures speed: the limits are hang guards,
tens of times longer than the work takes.
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import tdflow

HANG_S = float(os.environ.get("TDFLOW_HANG_S", 120))  # this long is hung, not slow


def run_python(code: str, timeout: float = HANG_S) -> str:
    """Stdout of ``code`` run by a fresh interpreter that imports this tdflow; fails the test
    when it does not finish within ``timeout`` seconds or exits with an error."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(tdflow.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it forked
        out, err = proc.communicate()
        pytest.fail(f"hung: no result within {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    assert proc.returncode == 0, f"exit code {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out


@contextlib.contextmanager
def hang_guard(report_fd: int, seconds: float = HANG_S):
    """Abort the whole run, writing every thread's traceback to ``report_fd``, if the block
    hangs (a failure, never a block)."""
    faulthandler.dump_traceback_later(seconds, exit=True, file=report_fd)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def hang_report(request) -> int:
    """A file descriptor of the terminal's stderr for hang_guard: pytest captures fd 2 during a
    test, and an aborted process loses what was captured, so use the copy that pytest's own
    faulthandler plugin keeps (fd 2 when that plugin is off)."""
    try:
        from _pytest.faulthandler import fault_handler_stderr_fd_key

        return request.config.stash[fault_handler_stderr_fd_key]
    except (ImportError, KeyError):
        return sys.__stderr__.fileno()


@pytest.fixture
def watchdog(hang_report):
    """hang_guard around the whole test."""
    with hang_guard(hang_report):
        yield
