"""Store selection order, the default store, and the CLI's shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wheelstore.store.config import SYSTEM_CONFIG

from .conftest import Runner, Users, one_line_error
from .wheelmaker import make_wheel


def _info(run: Runner, user: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = run(user, *args, "info", "--json", env=env)
    assert result.returncode == 0, result.stderr
    info: dict[str, object] = json.loads(result.stdout)
    return info


@pytest.fixture
def fresh_home(users: Users) -> str:
    """Give wsbob an empty home, as on first use."""
    home = Path(f"/home/{users.bob}")
    subprocess.run(["rm", "-rf", str(home / ".local"), str(home / ".config")], check=True)
    return str(home)


def test_default_store_just_works(run: Runner, users: Users, workdir: Path, fresh_home: str) -> None:
    whl = make_wheel(workdir, "dflt")
    os.chmod(whl, 0o644)
    result = run(users.bob, "realize", "--json", str(whl), umask=0o002)
    assert result.returncode == 0, result.stderr
    default = Path(fresh_home) / ".local/share/wheelstore/store"
    assert json.loads(result.stdout)[0]["tree"].startswith(str(default / "trees"))
    info = _info(run, users.bob)
    assert info["store"] == str(default) and info["selected_by"] == "default" and info["shared"] == "private"
    assert (default.stat().st_mode & 0o777) == 0o700
    assert (default.parent.stat().st_mode & 0o777) == 0o700


def test_selection_order(run: Runner, users: Users, workdir: Path, fresh_home: str) -> None:
    stores = {}
    for name in ("flag", "env", "user", "system"):
        stores[name] = workdir / name
        assert run(users.alice, "init", str(stores[name]), "--group", users.group).returncode == 0
    if SYSTEM_CONFIG.exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists on this machine; not touching an admin's file")
    SYSTEM_CONFIG.parent.mkdir(exist_ok=True)
    try:
        SYSTEM_CONFIG.write_text(f'store = "{stores["system"]}"\n')
        SYSTEM_CONFIG.chmod(0o644)
        assert _info(run, users.bob)["store"] == str(stores["system"])

        user_config = Path(fresh_home) / ".config/wheelstore/config.toml"
        user_config.parent.mkdir(parents=True)
        user_config.write_text(f'store = "{stores["user"]}"\n')
        subprocess.run(["chown", "-R", users.bob, str(Path(fresh_home) / ".config")], check=True)
        info = _info(run, users.bob)
        assert info["store"] == str(stores["user"]) and str(info["selected_by"]).startswith("user config")

        env = {"WHEELSTORE_STORE": str(stores["env"])}
        assert _info(run, users.bob, env=env)["store"] == str(stores["env"])
        info = _info(run, users.bob, "--store", str(stores["flag"]), env=env)
        assert info["store"] == str(stores["flag"]) and info["selected_by"] == "--store"
        # --store after the verb works the same
        after = run(users.bob, "info", "--json", "--store", str(stores["flag"]), env=env)
        assert json.loads(after.stdout)["store"] == str(stores["flag"])

        user_config.write_text("store = [not toml\n")
        line = one_line_error(run(users.bob, "info"))
        assert "is not valid TOML" in line
    finally:
        SYSTEM_CONFIG.unlink()
        SYSTEM_CONFIG.parent.rmdir()


def test_help_lists_every_verb() -> None:
    result = subprocess.run([sys.executable, "-m", "wheelstore", "--help"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert result.returncode == 0
    for verb in ("init", "venv", "install", "uninstall", "sync", "list", "verify", "gc", "stats", "doctor", "edit",
                 "lock"):
        assert f"    {verb} " in result.stdout, verb


def test_console_script_and_module_agree(run: Runner, tool: Path) -> None:
    script = subprocess.run([str(tool), "--version"], capture_output=True, text=True)
    module = subprocess.run([str(tool.parent / "python"), "-m", "wheelstore", "--version"], capture_output=True,
                            text=True)
    assert script.returncode == module.returncode == 0
    assert script.stdout == module.stdout and script.stdout.startswith("wheelstore ")
