"""Accounting and budgets of a store service (issue 20): ``stats`` reports per user what only their roots pin, and a
service refuses to publish a new tree that would bring what a user alone pins over their budget (``[service]
budget_user``, ``[service.budgets]`` users and @groups), publishing nothing; a tree already in the store is linked
without being charged.

Everything is real: ``wheelstore serve`` as its dedicated account (wssvc), users wsalice, wsbob and wscarol
installing through it from a local index, wheels whose trees are mostly one incompressible file of a known size.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import test_service_client as svc
from .conftest import Runner, Users, _ensure_user
from .pyindex import PyIndex
from .wheelmaker import make_wheel

#: each wheel's payload: its tree takes a little more (its directories, METADATA, RECORD, ...)
PAYLOAD = 200 << 10


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    with PyIndex(log_file=workdir / "access.log") as served:
        yield served


def _budgeted(run: Runner, workdir: Path, index: PyIndex, table: str) -> svc.Service:
    """A service store whose config has ``table`` added to its ``[service]`` table, served by wssvc."""
    _ensure_user(svc.SERVICE_USER, ())
    store, sock = svc._init_service_store(run, workdir, index)
    config = store / "config.toml"
    st = config.stat()
    config.write_text(config.read_text() + table)
    os.chown(config, st.st_uid, st.st_gid)
    return svc._serve(run, store, sock, index)


def _big(index: PyIndex, workdir: Path, name: str) -> str:
    """A wheel of ``name`` whose tree is mostly one file of :data:`PAYLOAD` random bytes, on the index."""
    wheel = make_wheel(svc._files(workdir), name, files={f"{name}/__init__.py": b"VALUE = 1\n",
                                                         f"{name}/blob.bin": os.urandom(PAYLOAD)})
    wheel.chmod(0o644)
    index.add(wheel)
    return wheel.name


def _install(run: Runner, user: str, service: svc.Service, workdir: Path, index: PyIndex, venv: str, req: str,
             ) -> Any:
    path = workdir / venv
    if not path.exists():
        svc._venv(run, user, path)
    return svc._install(run, user, service.store, path, index, req)


def _manifests(store: Path) -> dict[str, str]:
    """wheel filename -> key, of every manifest in the store."""
    return {json.loads(p.read_text())["wheel"]: p.stem for p in (store / "manifests").glob("*.json")}


def _du(path: Path) -> tuple[int, int]:
    """Allocated bytes and inodes of ``path`` and everything under it, as ``du`` counts them."""
    total, inodes = 0, 0
    for p in [path, *path.rglob("*")]:
        st = p.lstat()
        total += st.st_blocks * 512
        inodes += 1
    return total, inodes


def _pinned(store: Path, user: str) -> set[str]:
    """The units the service's roots for ``user`` name."""
    keys = set()
    for p in (store / "roots").glob("*/*.json"):
        doc = json.loads(p.read_text())
        if doc["user"] == user:
            keys |= {k for d in doc["dists"] for k in (d["key"], d["pyc"]) if k}
    return keys


def _fetched(index: PyIndex, filename: str) -> bool:
    return any(hit.method == "GET" and hit.path.endswith(f"/{filename}") for hit in index.log)


def _nothing_published(store: Path, filename: str, pinned: set[str]) -> None:
    assert filename not in _manifests(store)
    assert sorted(os.listdir(store / "trees")) == sorted(pinned)  # nor a staged tree left (a hidden name)
    assert not os.listdir(store / "staging")


def _stats(run: Runner, store: Path) -> dict[str, dict[str, Any]]:
    done = run(svc.SERVICE_USER, "--store", str(store), "stats", "--json")
    assert done.returncode == 0, done.stderr
    return {u["user"]: u for u in json.loads(done.stdout)["users"]}


def test_a_user_under_budget_publishes_and_one_over_it_is_refused_with_nothing_published(
    run: Runner, users: Users, workdir: Path, index: PyIndex
) -> None:
    service = _budgeted(run, workdir, index, 'budget_user = "300K"\n')
    try:
        first, second = _big(index, workdir, "bigone"), _big(index, workdir, "bigtwo")
        assert _install(run, users.alice, service, workdir, index, "va", "bigone").returncode == 0
        assert first in _manifests(service.store)

        refused = _install(run, users.alice, service, workdir, index, "vb", "bigtwo")
        assert refused.returncode != 0
        message = re.search(r"publishing (\S+) would bring what (\S+) alone pins to ([0-9.]+ KiB), over the "
                            r"300\.0 KiB budget for (\S+); nothing was published", refused.stderr)
        assert message, refused.stderr
        assert message.groups()[:2] == (second, users.alice) and message[4] == users.alice
        assert float(message[3].split()[0]) > 300, refused.stderr
        assert ("remove venvs you no longer use (what only they pin stops counting at wssvc's next gc); or ask wssvc "
                "to raise [service] budget_user") in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not _fetched(index, second)  # the index gives its size: refused before it was downloaded
        assert second not in _manifests(service.store)
        assert sorted(os.listdir(service.store / "trees")) == sorted(_pinned(service.store, users.alice))
        assert not os.listdir(service.store / "staging")

        # bob has a budget of his own: his publication of the same wheel goes through
        assert _install(run, users.bob, service, workdir, index, "vc", "bigtwo").returncode == 0
        assert second in _manifests(service.store)
    finally:
        service.stop()


def test_a_wheel_that_unpacks_over_the_budget_is_refused_before_its_tree_is_visible(
    run: Runner, users: Users, workdir: Path, index: PyIndex
) -> None:
    """Its compressed size fits, so it is fetched (or uploaded); its unpacked tree does not, so it is never renamed
    into place."""
    service = _budgeted(run, workdir, index, 'budget_user = "300K"\n')
    try:
        files = svc._files(workdir)
        _big(index, workdir, "bigone")
        zeros = make_wheel(files, "zeros", files={"zeros/__init__.py": b"", "zeros/blob.bin": bytes(PAYLOAD)})
        zeros.chmod(0o644)
        index.add(zeros)
        (files / "mine").mkdir()
        local = make_wheel(files / "mine", "mylocal", files={"mylocal/__init__.py": b"", "mylocal/b": bytes(PAYLOAD)})
        local.chmod(0o644)
        (files / "mine").chmod(0o755)
        assert zeros.stat().st_size < 10 << 10 and local.stat().st_size < 10 << 10
        assert _install(run, users.alice, service, workdir, index, "va", "bigone").returncode == 0
        pinned = _pinned(service.store, users.alice)

        refused = _install(run, users.alice, service, workdir, index, "vb", "zeros")
        assert refused.returncode != 0 and _fetched(index, zeros.name)
        assert f"publishing {zeros.name} would bring what {users.alice} alone pins to " in refused.stderr
        _nothing_published(service.store, zeros.name, pinned)

        refused = run(users.alice, "--store", str(service.store), "realize", str(local), env=svc.ISOLATED)
        assert refused.returncode != 0
        assert f"publishing {local.name} would bring what {users.alice} alone pins to " in refused.stderr
        _nothing_published(service.store, local.name, pinned)
        assert service.proc.poll() is None
    finally:
        service.stop()


def test_a_tree_already_in_the_store_is_linked_without_being_charged_and_stats_match_the_trees(
    run: Runner, users: Users, workdir: Path, index: PyIndex
) -> None:
    service = _budgeted(run, workdir, index, 'budget_user = "300K"\n')
    try:
        first, second = _big(index, workdir, "bigone"), _big(index, workdir, "bigtwo")
        assert _install(run, users.bob, service, workdir, index, "vbob", "bigtwo").returncode == 0
        assert _install(run, users.alice, service, workdir, index, "va", "bigone").returncode == 0
        # over her budget if it were charged, but bob's tree is there already: linked
        done = _install(run, users.alice, service, workdir, index, "va2", "bigtwo")
        assert done.returncode == 0, done.stderr
        assert svc._import(users.alice, workdir / "va2", "import bigtwo; print(bigtwo.VALUE)") == "1"

        alice, bob = _pinned(service.store, users.alice), _pinned(service.store, users.bob)
        stats = _stats(run, service.store)
        for user, mine, theirs in ((users.alice, alice, bob), (users.bob, bob, alice)):
            alone = [_du(service.store / "trees" / k) for k in mine - theirs]
            shared = [_du(service.store / "trees" / k) for k in mine & theirs]
            got = stats[user]
            assert (got["exclusive_units"], got["exclusive_bytes"], got["exclusive_inodes"]) == (
                len(alone), sum(b for b, _ in alone), sum(i for _, i in alone)), (user, got)
            assert (got["shared_units"], got["shared_bytes"], got["shared_inodes"]) == (
                len(shared), sum(b for b, _ in shared), sum(i for _, i in shared)), (user, got)
        assert stats[users.alice]["exclusive_bytes"] > PAYLOAD and stats[users.bob]["exclusive_units"] == 0
        assert _manifests(service.store)[first] in alice - bob
        assert _manifests(service.store)[second] in alice & bob

        text = run(svc.SERVICE_USER, "--store", str(service.store), "stats")
        assert text.returncode == 0, text.stderr
        line = next(x for x in text.stdout.splitlines() if x.startswith(f"user {users.bob}:"))
        assert "pins 0 units alone (0 B, 0 inodes) and " in line and " with others (" in line, line
    finally:
        service.stop()


def test_a_groups_budget_applies_to_each_member_and_a_users_own_entry_comes_first(
    run: Runner, users: Users, workdir: Path, index: PyIndex
) -> None:
    table = f'budget_user = "none"\n\n[service.budgets]\n"@{users.group}" = "300K"\n{users.bob} = "10M"\n'
    service = _budgeted(run, workdir, index, table)
    try:
        _big(index, workdir, "bigone"), _big(index, workdir, "bigtwo"), _big(index, workdir, "bigthree")
        assert _install(run, users.alice, service, workdir, index, "va", "bigone").returncode == 0
        refused = _install(run, users.alice, service, workdir, index, "vb", "bigtwo")
        assert refused.returncode != 0
        assert (f"over the 300.0 KiB budget for {users.alice} (as a member of @{users.group})" in refused.stderr
                and f'ask wssvc to raise [service.budgets] "@{users.group}"' in refused.stderr), refused.stderr
        # bob is a member too, but his own entry comes first; carol is in no group with a budget, and has none
        for user in (users.bob, users.carol):
            for name in ("bigtwo", "bigthree"):
                done = _install(run, user, service, workdir, index, f"v-{user}-{name}", name)
                assert done.returncode == 0, (user, name, done.stderr)
    finally:
        service.stop()


def test_stats_of_a_group_store_counts_each_members_roots(run: Runner, users: Users, workdir: Path,
                                                          group_store: Path) -> None:
    files = svc._files(workdir)
    shared = svc._wheel(files, "sharedpkg")
    mine = make_wheel(files, "alicepkg", files={"alicepkg/__init__.py": b"", "alicepkg/blob.bin": os.urandom(9000)})
    mine.chmod(0o644)
    for user, wheels in ((users.alice, (shared, mine)), (users.bob, (shared,))):
        venv = svc._venv(run, user, workdir / f"v-{user}")
        done = run(user, "--store", str(group_store), "install", "--venv", str(venv),
                   *(str(w) for w in wheels), env=svc.ISOLATED, timeout=300)
        assert done.returncode == 0, done.stderr
    done = run(users.alice, "--store", str(group_store), "stats", "--json")
    assert done.returncode == 0, done.stderr
    stats = {u["user"]: u for u in json.loads(done.stdout)["users"]}
    keys = _manifests(group_store)
    trees = group_store / "trees"
    owned = {k: pwd.getpwuid((trees / k).stat().st_uid).pw_name for k in os.listdir(trees)}
    assert owned and all(stat.S_ISDIR((trees / k).lstat().st_mode) for k in owned)
    alone = [_du(trees / k) for k in os.listdir(trees) if k.startswith(keys[mine.name])]
    assert (stats[users.alice]["exclusive_bytes"], stats[users.alice]["exclusive_inodes"]) == (
        sum(b for b, _ in alone), sum(i for _, i in alone)), stats
    assert stats[users.bob]["exclusive_units"] == 0 and stats[users.bob]["shared_units"] >= 1, stats
    assert stats[users.alice]["shared_bytes"] == stats[users.bob]["shared_bytes"] > 0, stats


@pytest.mark.parametrize(("table", "said"), [
    ('budget_user = "2 gallons"\n', "[service] budget_user is '2 gallons', not a budget"),
    ('[service.budgets]\nwsalice = -1\n', "[service.budgets] wsalice is -1, not a budget"),
    ('[service.budgets]\n"@@x" = "1G"\n', "[service.budgets]: '@@x' is not a user or @group name"),
])
def test_a_budget_that_does_not_parse_is_one_line_naming_the_setting(
    run: Runner, users: Users, workdir: Path, index: PyIndex, table: str, said: str
) -> None:
    _ensure_user(svc.SERVICE_USER, ())
    store, _sock = svc._init_service_store(run, workdir, index)
    config = store / "config.toml"
    st = config.stat()
    config.write_text(config.read_text() + table)
    os.chown(config, st.st_uid, st.st_gid)
    done = run(svc.SERVICE_USER, "serve", "--store", str(store), env=svc.ISOLATED, timeout=60)
    assert done.returncode != 0
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
