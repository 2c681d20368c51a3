"""The store's maintenance verbs: gc, stats and verify."""

from __future__ import annotations

import argparse
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from ..base.errors import printable
from ..store.store import Store
from .options import local_links, sources_from
from .output import err, out, print_json, size_text


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
    for u in report.unpublished:
        out(args, f"unpublished {u.path} ({u.name} {u.version}); its files belong to {u.owner}: "
                   f"they are freed by {u.owner}'s 'wheelstore gc' or root's")
    for u in report.not_removable:
        what = f"{u.name} {u.version}".strip() or u.kind
        out(args, f"not removable: {u.path} ({what}) belongs to {u.owner}; only {gc.who_can(u.owner)} can remove it")
    for problem in report.problems:
        out(args, f"skipped: {problem}")
    out(args, f"{verb} {len(report.removed)} entries ({size_text(report.freed_bytes)}); kept {report.live} in use by "
               f"{report.roots_live} venvs and {report.young} younger than the grace period")
    if report.staging_kept:
        out(args, f"kept {len(report.staging_kept)} staging entries of work in progress (their leases are held or "
                   "beat lately)")
    if report.locks_removed:
        out(args, f"{verb} {len(report.locks_removed)} lock files and leases nobody held")
    if report.cache_entries_removed:
        out(args, f"also removed {report.cache_entries_removed} entries for trees no longer in the store from your "
                   "cache")
    return 0


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
            out(args, printable(f"  {r['venv']} ({r['user']}, {where}): {r['state']}, {r['units']} units, "
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
    out(args, f"store {data['store']}: {size_text(result.store_usage.bytes)}, {result.store_usage.inodes} inodes")
    for v in result.venvs:
        out(args, f"venv {v.venv} ({v.user}): links {len(v.units)} units, {size_text(v.logical.bytes)} as copies; "
                   f"its own files {size_text(v.physical.bytes)}, {v.physical.inodes} inodes")
    users: Any = data["users"]
    for u in users:
        out(args, f"user {u['user']}: {u['venvs']} venvs, {size_text(u['logical_bytes'])} as copies, "
                   f"{size_text(u['physical_bytes'])} own files")
    logical, physical = result.logical, result.physical
    saved = f"{100 * (1 - physical.bytes / logical.bytes):.0f}%" if logical.bytes else "-"
    out(args, f"logical {size_text(logical.bytes)} ({logical.inodes} inodes), physical {size_text(physical.bytes)} "
               f"({physical.inodes} inodes): saves {size_text(logical.bytes - physical.bytes)} ({saved})")
    for note in result.notes:
        out(args, f"note: {note}")
    return 0


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
    out(args, f"checked {report.trees} trees, {report.files} files ({how}): {state}")
    if report.still_damaged and not args.repair:
        err(f"fix: wheelstore --store {store.root} verify --repair "
             "(their wheels come from the indexes, or from -f DIR)")
    return 0 if report.ok else 1
