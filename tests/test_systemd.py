"""The systemd unit, checked by the real systemd-analyze."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, require_tool

UNIT = REPO / "deploy" / "systemd" / "retain.service"


@pytest.fixture
def installed_unit(tmp_path) -> Path:
    """The unit with ExecStart pointing at this checkout's `retain`, which verify requires to exist."""
    retain = Path(sys.executable).parent / "retain"
    assert retain.exists()
    text = UNIT.read_text()
    assert "ExecStart=/opt/retain/.venv/bin/retain " in text
    unit = tmp_path / "retain.service"
    unit.write_text(text.replace("/opt/retain/.venv/bin/retain", str(retain)))
    return unit


def test_unit_passes_systemd_analyze_verify(installed_unit):
    result = subprocess.run([require_tool("systemd-analyze"), "verify", str(installed_unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "retain.service" not in result.stderr, result.stderr  # no warnings about our unit


def test_unit_is_rated_ok_or_better_by_systemd_analyze_security(installed_unit):
    result = subprocess.run(
        [require_tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(installed_unit)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for retain.service: ([\d.]+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    score, level = float(match.group(1)), match.group(2)
    assert level in ("OK", "SAFE", "PERFECT") and score < 5.0, (score, level)


def test_unit_declares_the_service_contract():
    text = UNIT.read_text()
    for line in ("Type=notify", "Restart=on-failure", "StateDirectory=retain", "ConfigurationDirectory=retain",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "KillMode=mixed"):
        assert f"\n{line}\n" in text, line
    assert re.search(r"\nWatchdogSec=\d+\n", text)
    assert re.search(r"\n(User=\w+|DynamicUser=yes)\n", text)
