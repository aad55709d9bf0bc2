"""docs/configuration.md is generated from tracer.settings and must stay in sync with it."""

from __future__ import annotations

import subprocess
import sys

from tests.deploy.conftest import ROOT
from tracer.settings import documented_options


def test_configuration_doc_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_doc.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_setting_and_variable_is_documented():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for field, variables, _help, _default in documented_options():
        assert f"`{field}`" in text
        for variable in variables.split(","):
            assert f"`{variable.strip()}`" in text
