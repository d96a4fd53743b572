"""tdflow.show_config() and `tdflow doctor`: what a bug report needs, the same in both."""
import io
import json

import tdflow
from tdflow import _dispatch, cli
from tdflow.config import build_config


def test_build_config_names_the_loaded_core_and_the_build():
    c = build_config()
    json.dumps(c)  # plain data
    assert c["tdflow"] == tdflow.__version__
    assert c["cpu_level"] == _dispatch.CHOICE.level
    assert tdflow._core.__name__ == "tdflow." + _dispatch.module_name(c["cpu_level"])
    assert c["cpu_level"] in c["levels_runnable"]
    assert c["eigen"].startswith("3.")
    assert c["threads"] == tdflow.get_num_threads()
    assert (c["openmp"] is not None) == bool(tdflow._core.has_openmp)
    if c["cpu_level"].startswith("x86-64-v") and not c["compiler"].startswith("MSVC"):
        assert c["cpu_level_flags"] == f"-march={c['cpu_level']} -mtune=generic"


def test_show_config_and_doctor_print_the_same(capsys):
    buf = io.StringIO()
    tdflow.show_config(file=buf)
    text = buf.getvalue()
    lines = text.splitlines()
    assert lines[0] == f"tdflow {tdflow.__version__}"
    level = _dispatch.CHOICE.level
    assert f"  cpu level      {level}: {_dispatch.CHOICE.reason}" in lines
    for key in ("levels built", "compiler", "eigen", "openmp", "threads"):
        assert any(line.startswith(f"  {key}") for line in lines), key
    assert cli.main(["doctor"]) == 0
    assert capsys.readouterr().out == text
