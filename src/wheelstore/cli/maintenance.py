"""The store's maintenance verbs: gc, stats and verify."""

from __future__ import annotations

import argparse
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from ..base.errors import printable
from ..store.store import Store
from .options import local_links, sources_from
from .output import count, err, out, print_json, size_text


def cmd_gc(args: argparse.Namespace) -> int:
    from ..store import gc

    grace = gc.DEFAULT_GRACE if args.grace is None else gc.parse_duration(args.grace)
    expiry = None if args.root_expiry is None else gc.parse_duration(args.root_expiry)
    with Store.select(args.store) as store:
        report = gc.collect_garbage(store, grace=grace, dry_run=args.dry_run, root_expiry=expiry)
    if args.json:
        print_json(report.to_json())
        return 0
    if args.dry_run:
        _print_roots(args, report.nodes, report.root_expiry_seconds)
    verb = "would remove" if args.dry_run else "removed"
    for u in report.removed:
        what = f"{u.name} {u.version}".strip() or u.kind
        out(args, f" - {u.path} ({what}, {size_text(u.bytes)})")
    _print_left(args, report, store_option=f"--store {report.store} ")
    for problem in report.problems:
        out(args, f"skipped: {problem}")
    out(args, f"{verb} {count(len(report.removed), 'entry', 'entries')} ({size_text(report.freed_bytes)}); kept "
               f"{report.live} in use by {count(report.roots_live, 'venv')} and {report.young} younger than the "
               "grace period")
    if report.staging_kept:
        out(args, f"kept {count(len(report.staging_kept), 'staging entry', 'staging entries')} of work in progress "
                   "(their leases are held or beat lately)")
    if report.locks_removed:
        out(args, f"{verb} {count(len(report.locks_removed), 'lock file')} and leases nobody held")
    if report.cache_entries_removed:
        out(args, f"also removed {count(report.cache_entries_removed, 'entry', 'entries')} for trees no longer in the "
                   "store from your cache")
    return 0


def _print_left(args: argparse.Namespace, report: Any, store_option: str) -> None:
    """What this gc could not free, one line per owner: how much, and whose gc frees it (each entry with -v;
    every one in --json). A member's gc meets every other member's unused trees: a line each buried the result."""
    from ..store.gc import who_can

    unpublished = "would unpublish" if report.dry_run else "unpublished"
    for units, said in ((report.unpublished, unpublished + " {n} ({size}) of {owner}: their files stay until {who} "
                                             "runs 'wheelstore {store}gc'"),
                        (report.not_removable, "cannot remove {n} ({size}) of {owner}: only {who} can, with "
                                               "'wheelstore {store}gc'")):
        by_owner: dict[str, list[Any]] = {}
        for u in units:
            by_owner.setdefault(u.owner, []).append(u)
        for owner, mine in sorted(by_owner.items()):
            trees = count(len(mine), "unused entry", "unused entries")
            more = "" if getattr(args, "verbose", False) else " (-v lists them)"
            out(args, said.format(n=trees, size=size_text(sum(u.bytes for u in mine)), owner=owner or "unknown",
                                  who=who_can(owner), store=store_option) + more)
            if getattr(args, "verbose", False):
                for u in mine:
                    what = f"{u.name} {u.version}".strip() or u.kind
                    out(args, f"   {u.path} ({what}, {size_text(u.bytes)})")


def _print_roots(args: argparse.Namespace, nodes: list[dict[str, Any]], expiry: float) -> None:
    """gc --dry-run: every root, by the node that wrote it, with its age (since a node last confirmed it)."""
    for n in nodes:
        hosts = f"host {', '.join(n['hosts'])}, " if n["hosts"] else ""
        which = "this node" if n["this_node"] else "another node" if n["node"] else "unknown nodes (older roots)"
        out(args, printable(f"roots written on {which} ({hosts}node id {n['node'] or '-'}):"))
        for r in n["roots"]:
            where = f"{r['fs']} {r['fs_type']}" if r["fs"] else "filesystem not recorded"
            left = f", expires in {_age_text(expiry - r['age_seconds'])}" if r["state"] == "believed" else ""
            by = f" by {r['confirmed_by']}'s gc" if r["confirmed_by"] else ""
            out(args, printable(f"  {r['venv']} ({r['user']}, {where}): {r['state']}, {count(r['units'], 'unit')}, "
                                f"confirmed {_age_text(r['age_seconds'])} ago{by}{left}"))


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def cmd_stats(args: argparse.Namespace) -> int:
    from ..store import stats

    with Store.select(args.store) as store:
        result = stats.measure(store)
    data = result.to_json()
    if args.json:
        print_json(data)
        return 0
    used = result.store_usage
    out(args, f"store {data['store']}: {size_text(used.bytes)}, {count(used.inodes, 'inode')}")
    for v in result.venvs:
        out(args, f"venv {v.venv} ({v.user}): links {count(len(v.units), 'unit')}, {size_text(v.logical.bytes)} as "
                   f"copies; its own files {size_text(v.physical.bytes)}, {count(v.physical.inodes, 'inode')}")
    users: Any = data["users"]
    for u in users:
        out(args, f"user {u['user']}: {count(u['venvs'], 'venv')}, {size_text(u['logical_bytes'])} as copies, "
                   f"{size_text(u['physical_bytes'])} own files; pins {count(u['exclusive_units'], 'unit')} alone "
                   f"({size_text(u['exclusive_bytes'])}, {count(u['exclusive_inodes'], 'inode')}) and "
                   f"{count(u['shared_units'], 'unit')} with others ({size_text(u['shared_bytes'])})")
    logical, physical = result.logical, result.physical
    out(args, f"logical {size_text(logical.bytes)} ({count(logical.inodes, 'inode')}), physical "
               f"{size_text(physical.bytes)} ({count(physical.inodes, 'inode')}): "
               f"{_saving(logical.bytes, physical.bytes)}")
    for note in result.notes:
        out(args, f"note: {note}")
    return 0


def _saving(logical: int, physical: int) -> str:
    """What sharing saves against copies, or, where the store holds more than the venvs link (few venvs, or trees
    no venv uses until gc), what it costs: a negative saving reads as a cost."""
    if not logical:
        return f"nothing linked; the store and venvs take {size_text(physical)}"
    ratio = f"{abs(100 * (logical - physical) / logical):.0f}%"
    if physical > logical:
        return f"costs {size_text(physical - logical)} more than copies would (+{ratio})"
    return f"saves {size_text(logical - physical)} against copies ({ratio})"


def cmd_verify(args: argparse.Namespace) -> int:
    from ..store import repair, verify

    sources = sources_from(args)
    local = repair.local_wheels(local_links(args))
    with Store.select(args.store) as store, ExitStack() as cleanup:

        def find(filename: str | None, sha256: str) -> Path | None:
            """A wheel to repair from: in the -f directories, else downloaded from the indexes (checked by hash)."""
            found = local(filename, sha256)
            if found is not None or filename is None or sources.offline:
                return found
            from ..fetch.download import find_wheel, remove_download
            from ..fetch.http import Http

            http = cleanup.enter_context(closing(Http()))
            path = find_wheel(store, filename, sha256, sources, http)
            if path is not None:
                cleanup.callback(remove_download, store, path)
            return path

        from ..service.client import repair_via_service, service_socket

        if args.repair and service_socket(store) is not None:  # the service repairs; this user cannot write
            report = repair_via_service(store, full=args.full)
        else:
            report = repair.verify_and_repair(store, full=args.full, finder=find) if args.repair \
                else verify.verify_store(store, full=args.full)
    if args.json:
        print_json(report.to_json())
        return 0 if report.ok else 1
    last = None
    for d in report.damaged:
        if d.key != last:
            unit = " (bytecode)" if d.unit == "bytecode" else ""
            print(printable(f"damaged: {d.name} {d.version}{unit}, tree {d.key}"))
            last = d.key
        print(f"  {d.describe()}")
    for r in report.repaired:
        source = f"from {r.wheel}" if r.wheel else "(compiled again on the next install)"
        out(args, printable(f"repaired: {r.name} {r.version}{' bytecode' if r.unit == 'bytecode' else ''} {source}; "
                             f"the damaged copy is in {', '.join(r.quarantined) or 'nowhere (it was gone)'}"))
    for name, version, key, why in report.unrepaired:
        print(printable(f"not repaired: {name} {version} ({key}): {why}"))
    for o in report.orphans:  # not damage (nobody uses them): said, but verify's status is the trees'
        print(f"no manifest: {o.describe()}")
    how = "re-hashed every file" if report.full else f"{report.rehashed} re-hashed, {report.relinked} only relinked"
    state = "all intact" if not report.damaged else (
        f"{len(report.still_damaged)} still damaged" if report.still_damaged else "all repaired")
    if report.orphans:
        state += f"; {len(report.orphans)} {'entry' if len(report.orphans) == 1 else 'entries'} of trees/ without a " \
                 "manifest (above)"
    out(args, f"checked {count(report.trees, 'tree')}, {count(report.files, 'file')} ({how}): {state}")
    if report.still_damaged and not args.repair:
        err(f"fix: wheelstore --store {store.root} verify --repair "
             "(their wheels come from the indexes, or from -f DIR)")
    return 0 if report.ok else 1
