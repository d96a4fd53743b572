"""What tdflow does with threads (tdflow/_openmp.py): the OpenMP wait policy given to the core's
runtime while it loads, the default thread count from the CPUs available (affinity, cgroup quota)."""
import os
import subprocess
import sys
import textwrap

import pytest

import tdflow
from isolation import run_python
from tdflow import _openmp

CLEAN = """
    import os
    for v in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        os.environ.pop(v, None)
"""


def test_loading_environment_sets_and_restores():
    env = {"PATH": "/bin"}
    with _openmp.loading_environment(env):
        assert env == {"PATH": "/bin", "GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "0"}
    assert env == {"PATH": "/bin"}
    with pytest.raises(KeyError), _openmp.loading_environment(env):
        raise KeyError("the import failed")
    assert env == {"PATH": "/bin"}


@pytest.mark.parametrize("var", _openmp.USER_WAIT_VARIABLES)
def test_loading_environment_leaves_a_user_setting(var):
    env = {var: "active" if var == "OMP_WAIT_POLICY" else "5"}
    with _openmp.loading_environment(env):
        assert env == {var: env[var]} and len(env) == 1
    assert len(env) == 1


def test_import_leaves_the_environment_and_uses_the_available_cpus():
    out = run_python(CLEAN + """
    import tdflow
    from tdflow import _openmp
    print([v for v in _openmp.USER_WAIT_VARIABLES if v in os.environ])
    print(tdflow.get_num_threads(), _openmp.available_cpus() if tdflow._core.has_openmp else 1)
    """)
    seen, counts = out.splitlines()
    assert seen == "[]"
    n, expected = counts.split()
    assert n == expected
    out = run_python(CLEAN + """
    os.environ["OMP_NUM_THREADS"] = "3"
    import tdflow
    print(tdflow.get_num_threads())
    """)
    assert out.strip() == ("3" if tdflow._core.has_openmp else "1")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not tdflow._core.has_openmp, reason="GNU OpenMP on Linux")
@pytest.mark.parametrize("user,shown", [(None, "1000"), ("77", "77")])
def test_gnu_openmp_got_the_spin_count(user, shown):
    """libgomp's own report of its settings (omp_display_env) holds the spin count tdflow gave it
    while loading, or the user's."""
    code = textwrap.dedent(CLEAN + f"""
    if {user!r}:
        os.environ["GOMP_SPINCOUNT"] = {user!r}
    import ctypes, tdflow
    paths = [line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line]
    if not paths:
        print("no libgomp")
    else:
        ctypes.CDLL(paths[0]).omp_display_env(1)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(tdflow.__file__)), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if "no libgomp" in proc.stdout:
        pytest.skip("the core does not use GNU OpenMP")
    assert f"GOMP_SPINCOUNT = '{shown}'" in proc.stderr


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_along_the_path(tmp_path):
    write(tmp_path / "proc", "0::/a/b\n")
    write(tmp_path / "fs" / "a" / "b" / "cpu.max", "max 100000\n")
    write(tmp_path / "fs" / "a" / "cpu.max", "250000 100000\n")
    write(tmp_path / "fs" / "cpu.max", "800000 100000\n")
    assert _openmp.cgroup_cpu_quota(str(tmp_path / "fs"), str(tmp_path / "proc")) == 2.5
    cpus = _openmp.available_cpus(str(tmp_path / "fs"), str(tmp_path / "proc"))
    unlimited = _openmp.available_cpus(str(tmp_path / "none"), str(tmp_path / "none"))
    assert cpus == min(2, unlimited)  # rounded down


def test_cgroup_v1_quota_and_no_limit(tmp_path):
    write(tmp_path / "proc", "4:memory:/x\n3:cpu,cpuacct:/job\n0::/\n")
    write(tmp_path / "fs" / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "50000\n")
    write(tmp_path / "fs" / "cpu,cpuacct" / "job" / "cpu.cfs_period_us", "100000\n")
    write(tmp_path / "fs" / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "fs" / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert _openmp.cgroup_cpu_quota(str(tmp_path / "fs"), str(tmp_path / "proc")) == 0.5
    assert _openmp.available_cpus(str(tmp_path / "fs"), str(tmp_path / "proc")) == 1  # at least one
    write(tmp_path / "fs" / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "-1\n")
    assert _openmp.cgroup_cpu_quota(str(tmp_path / "fs"), str(tmp_path / "proc")) is None
    assert _openmp.cgroup_cpu_quota(str(tmp_path / "fs"), str(tmp_path / "missing")) is None
