"""Site stores and overlays (issue 18 point 7, acceptance 7): a store root populated, read-only to users, and each
user's private overlay for what it lacks. Real users, real processes, the installed CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .conftest import Runner, Users, one_line_error, published
from .test_gc import _gc, _imports, _install, _key, _keys, _units, _venv, _wheels


def _site(run: Runner, workdir: Path, wheels: list[Path]) -> Path:
    """A site store of root's, which users may read but not publish into, holding ``wheels``, whose gc reads the
    overlays under ``workdir/*/overlay``."""
    site = workdir / "site"
    assert run(None, "init", "--shared", "all", str(site)).returncode == 0
    done = run(None, "--store", str(site), "realize", *map(str, wheels))
    assert done.returncode == 0, done.stderr
    with open(site / "config.toml", "a") as f:
        f.write(f'\n[gc]\noverlays = ["{workdir}/*/overlay"]\n')
    return site


def _overlay(run: Runner, user: str, workdir: Path, site: Path) -> Path:
    home = workdir / user
    home.mkdir(mode=0o755)
    shutil.chown(home, user, user)
    overlay = home / "overlay"
    done = run(user, "init", "--upstream", str(site), str(overlay))
    assert done.returncode == 0, done.stderr
    assert f"an overlay of the site store {site}" in done.stdout
    return overlay


def _trees(store: Path) -> set[str]:
    """The wheel trees of a store (pyc units left out)."""
    return {u for u in _units(store) if len(u) == 64}


def test_site_store_with_two_users_overlays(run: Runner, users: Users, workdir: Path) -> None:
    """Acceptance 7: each user installs a set partly in the site store; only the missing trees are published, into
    that user's overlay, the site store unchanged; the site's gc keeps what overlay venvs link (and only that), and
    each overlay's gc keeps its own and removes nothing in the site."""
    w = _wheels(workdir / "wheels", ["sa", "sb", "sc", "sunused", "ad", "be"])
    site = _site(run, workdir, [w["sa"], w["sb"], w["sc"], w["sunused"]])
    assert _trees(site) == {_key(w[n]) for n in ("sa", "sb", "sc", "sunused")}
    before = published(site)
    alice, bob = (_overlay(run, u, workdir, site) for u in (users.alice, users.bob))

    va = _venv(run, users.alice, workdir / users.alice / "venv")
    vb = _venv(run, users.bob, workdir / users.bob / "venv")
    done = run(users.alice, "--store", str(alice), "install", "--link-mode", "symlink", "--venv", str(va),
               *map(str, (w["sa"], w["sb"], w["ad"])))
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr  # the site's lock taken, the root kept
    _install(run, users.bob, bob, vb, w["sb"], w["sc"], w["be"])
    assert _trees(alice) == {_key(w["ad"])} and _trees(bob) == {_key(w["be"])}  # only what the site lacks
    assert published(site) == before  # byte for byte: nothing published there, no root, no lock file
    _imports(run, users.alice, va, "sa", "sb", "ad")
    _imports(run, users.bob, vb, "sb", "sc", "be")

    info = json.loads(run(users.alice, "--store", str(alice), "info", "--json").stdout)
    assert info["upstream"]["store"] == str(site)
    doctor = run(users.alice, "--store", str(alice), "doctor")
    assert f"{alice} -> {site}" in doctor.stdout and "the site's gc keeps what this overlay's venvs link" \
        in doctor.stdout, doctor.stdout

    report = _gc(run, None, site)  # root's gc of the site reads both overlays' roots
    assert sorted(o["store"] for o in report["overlays"]) == [str(alice), str(bob)]
    assert {u[:64] for u in _keys(report["removed"])} == {_key(w["sunused"])}, report
    assert _trees(site) == {_key(w[n]) for n in ("sa", "sb", "sc")}
    site_now = published(site)

    for user, overlay, own in ((users.alice, alice, "ad"), (users.bob, bob, "be")):
        report = _gc(run, user, overlay)
        assert report["removed"] == [] and _trees(overlay) == {_key(w[own])}, report
    assert published(site) == site_now  # an overlay's gc touches nothing in the site
    _imports(run, users.alice, va, "sa", "sb", "ad")
    _imports(run, users.bob, vb, "sb", "sc", "be")

    shutil.rmtree(va)  # alice's venv gone: the site's gc frees what only it used, and keeps bob's
    report = _gc(run, None, site)
    assert {u[:64] for u in _keys(report["removed"])} == {_key(w["sa"])}, report
    report = _gc(run, users.alice, alice)
    assert {u[:64] for u in _keys(report["removed"])} == {_key(w["ad"])}, report
    _imports(run, users.bob, vb, "sb", "sc", "be")


def test_an_overlay_refuses_another_store_at_its_site_path(run: Runner, users: Users, workdir: Path) -> None:
    """A different store mounted where the site store was is refused in one line, not read (nor kept by its gc)."""
    w = _wheels(workdir / "wheels", ["oa"])
    site = _site(run, workdir, [w["oa"]])
    alice = _overlay(run, users.alice, workdir, site)
    os.rename(site, workdir / "site.moved")
    assert run(None, "init", "--shared", "all", str(site)).returncode == 0
    venv = _venv(run, users.alice, workdir / users.alice / "venv")
    line = one_line_error(run(users.alice, "--store", str(alice), "install", "--venv", str(venv), str(w["oa"])))
    assert "holds another store" in line and "was made for" in line, line
    assert os.listdir(alice / "trees") == []


def test_site_gc_does_not_follow_an_overlay_symlink(run: Runner, users: Users, workdir: Path) -> None:
    """A user's overlay path that is a symlink (to another user's overlay, say) is not read by root's gc: only the
    overlays its patterns reach without a link count."""
    w = _wheels(workdir / "wheels", ["ya", "yb"])
    site = _site(run, workdir, [w["ya"], w["yb"]])
    bob = _overlay(run, users.bob, workdir, site)
    vb = _venv(run, users.bob, workdir / users.bob / "venv")
    _install(run, users.bob, bob, vb, w["ya"])
    home = workdir / users.alice
    home.mkdir(mode=0o755)
    shutil.chown(home, users.alice, users.alice)
    done = run.python(users.alice, "import os, sys; os.symlink(sys.argv[1], sys.argv[2])", str(bob),
                      str(home / "overlay"))
    assert done.returncode == 0, done.stderr
    report = _gc(run, None, site)
    assert [o["store"] for o in report["overlays"]] == [str(bob)]
    assert any("symlink" in p and str(home / "overlay") in p for p in report["problems"]), report["problems"]
    assert {u[:64] for u in _keys(report["removed"])} == {_key(w["yb"])}
    _imports(run, users.bob, vb, "ya")
