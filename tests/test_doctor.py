"""``wheelstore doctor`` (issue 5, acceptance 4): real users and groups, real ext4/XFS filesystems, real chmods.

Each test runs the installed CLI as a test user and reads its ``--json`` report, so what is checked is what a user
sees, and the fixes it prints are run for real to prove they are the exact commands.
"""

from __future__ import annotations

import grp
import json
import os
import subprocess
from pathlib import Path

import pytest

from wheelstore.cli import doctor
from wheelstore.store.config import Selection
from wheelstore.store.store import Store
from wheelstore.venv.linkmode import fs_type

from .conftest import Filesystems, Runner, Users, one_line_error
from .wheelmaker import make_wheel

CHECK_KEYS = {"name", "status", "detail", "fix"}
REPORT_KEYS = {"store", "selected_by", "venv", "user", "ok", "auto_link_mode", "checks"}


def _doctor(run: Runner, user: str | None, store: Path, *extra: str, umask: int = 0o022,
            env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, object]],
                                                        dict[str, object]]:
    """Run ``doctor --json``; return the process, the checks by name, and the whole report."""
    done = run(user, "doctor", "--store", str(store), "--json", *extra, umask=umask, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    return done, {c["name"]: c for c in report["checks"]}, report


def _as(run: Runner, user: str, command: str) -> None:
    """Run a printed fix as ``user``, through the shell, as they would paste it."""
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=run.env(user), cwd="/",
                          user=user, group=user, extra_groups=[run.users.group])
    assert done.returncode == 0, done.stderr


def _sticky_dir(root: Path, name: str) -> Path:
    d = root / f"{name}-{os.getpid()}-{len(list(root.iterdir()))}"
    d.mkdir()
    d.chmod(0o1777)
    return d


@pytest.fixture
def ext4(workdir: Path) -> Path:
    kind = fs_type(str(workdir))
    if kind != "ext4":
        pytest.skip(f"/var/tmp is on {kind}, not ext4")
    return workdir


def test_member_passes_and_non_member_fails_naming_the_group(run: Runner, users: Users, group_store: Path) -> None:
    done, checks, report = _doctor(run, users.bob, group_store, umask=0o077)
    assert done.returncode == 0, done.stdout
    assert report["ok"] is True and report["user"] == users.bob
    assert checks["membership"]["status"] == "ok" and users.group in str(checks["membership"]["detail"])
    assert checks["access"]["status"] == "ok"
    assert checks["locks"]["status"] == "ok"
    umask = str(checks["umask"]["detail"])  # informational only: every writer sets explicit modes
    assert checks["umask"]["status"] == "ok" and umask.startswith("0077") and "does not matter" in umask
    # no scratch left
    assert os.listdir(group_store / "staging") == [] and os.listdir(group_store / "locks") == ["gc.lock"]

    done, checks, report = _doctor(run, users.carol, group_store)
    assert done.returncode != 0 and report["ok"] is False
    membership = checks["membership"]
    assert membership["status"] == "fail"
    assert membership["fix"] == f"usermod -aG {users.group} {users.carol}"
    assert f"newgrp {users.group}" in str(membership["detail"]) and "log in again" in str(membership["detail"])
    line = one_line_error(run(users.carol, "doctor", "--store", str(group_store)))
    assert users.group in line and "usermod -aG" in line


def test_member_whose_session_predates_the_group_is_told_to_log_in_again(run: Runner, users: Users,
                                                                          group_store: Path) -> None:
    """alice is in wstest in /etc/group, but this process was started without it, as after a fresh usermod."""
    done = subprocess.run([str(run.tool), "doctor", "--store", str(group_store), "--json"], capture_output=True,
                          text=True, env=run.env(users.alice), cwd="/", user=users.alice, group=users.alice,
                          extra_groups=[])
    assert done.returncode != 0
    membership = {c["name"]: c for c in json.loads(done.stdout)["checks"]}["membership"]
    assert membership["status"] == "fail" and membership["fix"] == f"newgrp {users.group}"
    assert "log in again" in membership["detail"]


def test_ext4_store_says_reflink_is_unavailable_and_names_auto_mode(run: Runner, users: Users, ext4: Path) -> None:
    group = ext4 / "group-store"
    assert run(users.alice, "init", str(group), "--group", users.group).returncode == 0
    done, checks, report = _doctor(run, users.bob, group)
    assert done.returncode == 0, done.stdout
    detail = str(checks["reflink"]["detail"])
    assert "reflink unavailable" in detail and "ext4" in detail and "auto will pick fold" in detail
    assert report["auto_link_mode"] == "fold"

    private = ext4 / "private-store"
    assert run(users.alice, "init", str(private)).returncode == 0
    done, checks, report = _doctor(run, users.alice, private)
    assert done.returncode == 0, done.stdout
    assert "auto will pick fold" in str(checks["reflink"]["detail"]) and report["auto_link_mode"] == "fold"


def test_doctor_names_the_mode_install_then_uses(run: Runner, users: Users, group_store: Path, workdir: Path) -> None:
    venv = workdir / "venv"
    assert run(users.bob, "venv", str(venv)).returncode == 0
    done, checks, report = _doctor(run, users.bob, group_store, "--venv", str(venv))
    assert done.returncode == 0, done.stdout
    assert checks["venv"]["status"] == "ok" and checks["venv-writable"]["status"] == "ok"
    wheel = make_wheel(workdir, "docdemo")
    wheel.chmod(0o644)
    installed = run(users.bob, "--store", str(group_store), "install", "--venv", str(venv), "--json", str(wheel))
    assert installed.returncode == 0, installed.stderr
    assert [i["link_mode"] for i in json.loads(installed.stdout)["installed"]] == [report["auto_link_mode"]]


def test_xfs_store_says_reflink_works(run: Runner, users: Users, filesystems: Filesystems) -> None:
    store = _sticky_dir(filesystems.xfs, "doctor") / "store"
    assert run(users.alice, "init", str(store), "--group", users.group).returncode == 0
    done, checks, report = _doctor(run, users.bob, store)
    assert done.returncode == 0, done.stdout  # the small loop filesystem gives a space warning, not a failure
    assert checks["reflink"]["status"] == "ok" and "reflink works" in str(checks["reflink"]["detail"])
    assert report["auto_link_mode"] == "reflink"
    assert "xfs" in str(checks["filesystems"]["detail"])
    assert checks["space"]["status"] == "warn" and "running low" in str(checks["space"]["detail"])  # 300 MB


def test_store_and_venv_on_different_devices(run: Runner, users: Users, filesystems: Filesystems,
                                             ext4: Path) -> None:
    store = _sticky_dir(filesystems.xfs, "doctor-xdev") / "store"
    assert run(users.alice, "init", str(store), "--group", users.group).returncode == 0
    venv = ext4 / "venv"
    assert run(users.alice, "venv", str(venv)).returncode == 0
    done, checks, report = _doctor(run, users.alice, store, "--venv", str(venv))
    assert done.returncode == 0, done.stdout
    fs = checks["filesystems"]
    assert fs["status"] == "warn"
    assert "different devices" in str(fs["detail"]) and "xfs" in str(fs["detail"]) and "ext4" in str(fs["detail"])
    assert "hard links and reflinks between them are impossible" in str(fs["detail"])
    assert "different filesystems" in str(checks["reflink"]["detail"]) and report["auto_link_mode"] == "fold"

    same = _sticky_dir(filesystems.xfs, "doctor-samedev") / "venv"
    assert run(users.alice, "venv", str(same)).returncode == 0
    _, checks, report = _doctor(run, users.alice, store, "--venv", str(same))
    assert checks["filesystems"]["status"] == "ok" and report["auto_link_mode"] == "reflink"


def test_drifted_modes_are_reported_with_the_command_that_fixes_them(run: Runner, users: Users,
                                                                      group_store: Path) -> None:
    os.chmod(group_store / "locks", 0o770)  # setgid and sticky lost: works, but members could delete others' entries
    done, checks, _ = _doctor(run, users.bob, group_store)
    assert done.returncode == 0, done.stdout
    modes = checks["modes"]
    assert modes["status"] == "warn" and "locks/ is 0770" in str(modes["detail"]) and "3770" in str(modes["detail"])
    assert modes["fix"] == f"chmod 3770 {group_store}/locks"

    os.chmod(group_store / "trees", 0o750)  # members can no longer publish
    os.chown(group_store / "staging", -1, grp.getgrnam(users.other_group).gr_gid)
    done, checks, _ = _doctor(run, users.bob, group_store)
    assert done.returncode != 0
    modes = checks["modes"]
    assert modes["status"] == "fail" and checks["access"]["status"] == "fail"
    assert f"staging/ has group {users.other_group}" in str(modes["detail"])
    fix = str(modes["fix"])
    assert f"chmod 3770 {group_store}/trees" in fix and f"chgrp {users.group} {group_store}/staging" in fix
    assert users.alice in str(modes["detail"])  # who may run it: the store's owner (or root)

    _as(run, users.alice, fix)
    done, checks, _ = _doctor(run, users.bob, group_store)
    assert done.returncode == 0 and checks["modes"]["status"] == "ok", done.stdout


def test_json_schema_and_a_missing_store(run: Runner, users: Users, workdir: Path) -> None:
    missing = workdir / "nowhere" / "store"
    done, checks, report = _doctor(run, users.alice, missing)
    assert done.returncode != 0
    assert set(report) == REPORT_KEYS
    assert report["store"] == str(missing) and report["selected_by"] == "--store" and report["venv"] is None
    assert isinstance(report["checks"], list)
    for check in report["checks"]:
        assert set(check) == CHECK_KEYS
        assert check["status"] in ("ok", "warn", "fail")
        assert isinstance(check["detail"], str) and "\n" not in check["detail"] and check["detail"]
        assert check["fix"] is None or isinstance(check["fix"], str)
    assert checks["store"]["status"] == "fail" and checks["store"]["fix"] == f"wheelstore init {missing}"
    line = one_line_error(done)
    assert f"wheelstore init {missing}" in line
    text = run(users.alice, "doctor", "--store", str(missing))
    assert f"fix: wheelstore init {missing}" in text.stdout and one_line_error(text)
    assert not missing.parent.exists()  # doctor never creates anything


def test_default_store_that_does_not_exist_yet_is_not_a_failure(run: Runner, users: Users, workdir: Path) -> None:
    env = {"XDG_DATA_HOME": str(workdir / "data"), "XDG_CONFIG_HOME": str(workdir / "config")}
    done = run(users.bob, "doctor", "--json", env=env)
    assert done.returncode == 0, done.stdout
    store = {c["name"]: c for c in json.loads(done.stdout)["checks"]}["store"]
    assert store["status"] == "warn" and "first install creates it" in store["detail"]
    assert not (workdir / "data").exists()


def test_a_venv_this_user_cannot_write(run: Runner, users: Users, group_store: Path, workdir: Path) -> None:
    venv = workdir / "alices-venv"
    assert run(users.alice, "venv", str(venv)).returncode == 0
    done, checks, _ = _doctor(run, users.bob, group_store, "--venv", str(venv))
    assert done.returncode != 0
    assert checks["venv"]["status"] == "ok"
    assert checks["venv-writable"]["status"] == "fail" and users.alice in str(checks["venv-writable"]["detail"])
    done, checks, _ = _doctor(run, users.bob, group_store, "--venv", str(workdir / "no-venv"))
    assert checks["venv"]["status"] == "fail" and checks["venv"]["fix"] == f"wheelstore venv {workdir / 'no-venv'}"


def test_api_report(workdir: Path) -> None:
    """The typed API under the verb: a report of checks, the selection passed through as given."""
    store = workdir / "api-store"
    Store.init(store).close()
    report = doctor.run(Selection(store, "test"), None)
    assert report.ok and report.selected_by == "test"
    names = [c.name for c in report]
    assert names[:4] == ["store", "membership", "access", "modes"] and "venv" not in names
    assert {"umask", "filesystems", "network-fs", "reflink", "protected-hardlinks", "locks", "space"} <= set(names)
    assert report.error() is None


# -- the directories above the store (issue 14, acceptance 3) -------------------------------------------------------


def _project_dir(workdir: Path, users: Users, owner: str, mode: int) -> Path:
    """A project directory as sites make them: owned by ``owner``, group ``wstest``, with ``mode``."""
    d = workdir / f"project-{owner}-{mode:o}"
    d.mkdir()
    os.chown(d, users.uid(owner), users.gid)
    d.chmod(mode)
    return d


def test_init_refuses_a_parent_members_may_rename_entries_in(run: Runner, users: Users, workdir: Path) -> None:
    """Under a group-writable directory without the sticky bit, bob could rename alice's store away and init his
    own in its place: init refuses, with the fix, and creates nothing; the fix makes it pass."""
    project = _project_dir(workdir, users, users.alice, 0o2775)
    store = project / "store"
    line = one_line_error(run(users.alice, "init", str(store), "--group", users.group))
    assert f"{project} is group-writable ({users.group}) without the sticky bit" in line, line
    assert f"members of group {users.group} could move a store at {store} away" in line
    assert f"fix: as {users.alice}: chmod +t {project}" in line
    assert os.listdir(project) == []

    _as(run, users.alice, f"chmod +t {project}")
    done = run(users.alice, "init", str(store), "--group", users.group)
    assert done.returncode == 0, done.stderr
    done, checks, _ = _doctor(run, users.bob, store)
    assert done.returncode == 0 and checks["parents"]["status"] == "ok", done.stdout


def test_init_refuses_a_parent_owned_by_another_member_and_sees_through_symlinks(
    run: Runner, users: Users, workdir: Path
) -> None:
    """bob's sticky project directory is still bob's: its owner may rename anything in it. A symlink to it from a
    safe place changes nothing: the real directory is judged."""
    project = _project_dir(workdir, users, users.bob, 0o3775)
    line = one_line_error(run(users.alice, "init", str(project / "store"), "--group", users.group))
    assert f"{project} belongs to {users.bob}, so {users.bob} could move a store" in line, line
    assert f"fix: as root: chown root {project}" in line
    link = workdir / "via-link"
    link.symlink_to(project)
    line = one_line_error(run(users.alice, "init", str(link / "store"), "--group", users.group))
    assert f"{project} belongs to {users.bob}" in line, line
    assert os.listdir(project) == []


def test_doctor_reports_a_parent_that_lost_its_sticky_bit(run: Runner, users: Users, workdir: Path) -> None:
    project = _project_dir(workdir, users, users.alice, 0o3775)
    store = project / "store"
    assert run(users.alice, "init", str(store), "--group", users.group).returncode == 0
    project.chmod(0o2775)
    # what the check is for: bob can now move alice's store away and make his own in its place
    moved = run.python(users.bob, "import os, sys; os.rename(sys.argv[1], sys.argv[1] + '.old')", str(store))
    assert moved.returncode == 0, moved.stderr
    os.rename(f"{store}.old", store)

    done, checks, report = _doctor(run, users.bob, store)
    assert done.returncode != 0 and report["ok"] is False
    parents = checks["parents"]
    assert parents["status"] == "fail" and parents["fix"] == f"chmod +t {project}"
    detail = str(parents["detail"])
    assert f"{project} is group-writable ({users.group}) without the sticky bit" in detail
    assert f"the fix is for {users.alice} to run" in detail
    assert "chmod +t" in one_line_error(run(users.bob, "doctor", "--store", str(store)))

    _as(run, users.alice, str(parents["fix"]))
    done, checks, _ = _doctor(run, users.bob, store)
    assert done.returncode == 0 and checks["parents"]["status"] == "ok", done.stdout
