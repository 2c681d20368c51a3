"""Acceptance 7 of issue 14: each hostile wheel is refused with one line or made inert, nothing is left in ``trees/``
or ``staging/``, and a member lying about its size is stopped before more than its promised size is written."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from wheelstore.base.errors import EntryPointError, NotAFile, RecordMismatch
from wheelstore.base.fsio import CHUNK
from wheelstore.store import entrypoints
from wheelstore.store.treefiles import read_tree_file
from wheelstore.store.wheel import WheelArchive

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error, snapshot
from .wheelmaker import make_wheel, record_hash

GIB = 1 << 30


def _bomb(directory: Path, name: str, *, record_size: str) -> Path:
    """A real wheel with one member of 1 GiB of zeros (about 1 MB compressed), streamed into the zip so neither the
    test nor the wheel ever holds it whole; RECORD gives its true hash and ``record_size``."""
    dist_info = f"{name}-1.0.dist-info"
    small = {
        f"{name}/__init__.py": b"",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    zeros = bytes(CHUNK)
    digest = hashlib.sha256()
    for _ in range(GIB // CHUNK):
        digest.update(zeros)
    big_hash = "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    rows = [f"{p},{record_hash(d)},{len(d)}" for p, d in small.items()]
    rows += [f"{name}/zeros.bin,{big_hash},{record_size}", f"{dist_info}/RECORD,,"]
    whl = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in small.items():
            zf.writestr(path, data)
        info = zipfile.ZipInfo(f"{name}/zeros.bin", date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        with zf.open(info, "w", force_zip64=True) as f:
            for _ in range(GIB // CHUNK):
                f.write(zeros)
        zf.writestr(f"{dist_info}/RECORD", "\n".join(rows) + "\n")
    os.chmod(whl, 0o644)
    return whl


def _empty_areas(store: Path) -> None:
    """Nothing half-made is left: no tree, no staging directory, no spool file."""
    assert os.listdir(store / "trees") == []
    assert os.listdir(store / "staging") == []
    assert os.listdir(store / "manifests") == []


def test_lying_member_is_refused_before_it_is_written(run: Runner, users: Users, workdir: Path,
                                                     group_store: Path) -> None:
    """RECORD says 10 bytes, the zip holds 1 GiB: refused from the central directory, before anything is unpacked."""
    whl = _bomb(workdir, "liar", record_size="10")
    assert whl.stat().st_size < 16 << 20
    line = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl), timeout=60))
    assert "'liar/zeros.bin' is 1073741824 bytes in the zip, RECORD says 10" in line, line
    _empty_areas(group_store)


def test_writer_stops_at_the_promised_size(workdir: Path) -> None:
    """Streaming itself stops at the promised size (RECORD's, or the zip's where RECORD gives none): a member whose
    header and RECORD were both believed still cannot write more than that, whatever it decompresses to."""
    data = bytes(5 * CHUNK)
    whl = make_wheel(workdir, "grow", files={"grow/__init__.py": b"", "grow/big.bin": data})
    with WheelArchive(whl) as archive:
        (member,) = [m for m in archive.members if m.name == "grow/big.bin"]
        written: list[int] = []
        for lie in (10, CHUNK + 1):
            written.clear()
            with pytest.raises(RecordMismatch, match="larger than the"):
                archive.extract(member._replace(size=lie), lambda chunk: written.append(len(chunk)))
            assert sum(written) <= lie
        written.clear()
        archive.extract(member, lambda chunk: written.append(len(chunk)))
        assert sum(written) == len(data)


def test_unpacked_size_limit(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """A wheel that unpacks to more than the limit is refused before unpacking; the message says how to raise it,
    and raising it lets the same kind of wheel through."""
    whl = make_wheel(workdir, "roomy", files={"roomy/__init__.py": b"", "roomy/data.bin": bytes(3 << 20)})
    os.chmod(whl, 0o644)
    env = {"WHEELSTORE_MAX_UNPACKED": "2M"}
    line = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl), env=env))
    assert "unpacks to more than 2 MiB, the limit (set by WHEELSTORE_MAX_UNPACKED)" in line, line
    assert "WHEELSTORE_MAX_UNPACKED=16G" in line and "max_unpacked" in line, line
    _empty_areas(group_store)
    bad = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl),
                             env={"WHEELSTORE_MAX_UNPACKED": "lots"}))
    assert "WHEELSTORE_MAX_UNPACKED is 'lots', not a size" in bad, bad
    done = run(users.bob, "--store", str(group_store), "realize", str(whl), env={"WHEELSTORE_MAX_UNPACKED": "4M"})
    assert done.returncode == 0, done.stderr


def test_unpacked_size_limit_from_the_store_config(run: Runner, users: Users, workdir: Path,
                                                   group_store: Path) -> None:
    """The store's owner sets the limit in the store's config.toml; a bomb without RECORD sizes is held to it."""
    config = group_store / "config.toml"
    mode = config.stat().st_mode
    config.chmod(0o644)
    config.write_text(config.read_text().replace("[store]\n", '[store]\nmax_unpacked = "64M"\n'))
    config.chmod(mode)
    whl = _bomb(workdir, "nosize", record_size="")
    line = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl), timeout=60))
    assert "unpacks to more than 64 MiB, the limit (set by max_unpacked in the store's config.toml)" in line, line
    _empty_areas(group_store)


def _pyc_wheel(directory: Path, name: str) -> Path:
    """``m.py`` prints A; the wheel also ships, listed in RECORD, an unchecked-hash pyc of a source printing B (and
    the same for a module in ``.data/purelib``)."""
    src = directory / f"{name}_b.py"
    src.write_text("print('B')\n")
    pyc = directory / f"{name}_b.pyc"
    subprocess.run([SYSTEM_PYTHON, "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], "
                    "doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)",
                    str(src), str(pyc)], check=True)
    tag = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.implementation.cache_tag)"], check=True,
                         capture_output=True, text=True).stdout.strip()
    files = {
        f"{name}.py": b"print('A')\n",
        f"__pycache__/{name}.{tag}.pyc": pyc.read_bytes(),
        # a source in .data/purelib lands beside the root's __pycache__
        f"{name}-1.0.data/purelib/{name}_data.py": b"print('A')\n",
        f"__pycache__/{name}_data.{tag}.pyc": pyc.read_bytes(),
        f"{name}_only.pyc": pyc.read_bytes(),  # a sourceless module: kept, there is no source to prefer
    }
    whl = make_wheel(directory, name, files=files)
    os.chmod(whl, 0o644)
    return whl


@pytest.mark.parametrize("mode", ["fold", "copy"])
def test_shipped_bytecode_is_not_trusted(run: Runner, users: Users, workdir: Path, group_store: Path,
                                         mode: str) -> None:
    """A shipped pyc of a module whose source the wheel has never runs: the venv runs the source, as pip's would."""
    name = f"shipped_{mode}"
    whl = _pyc_wheel(workdir, name)
    venv = workdir / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(["chown", "-R", users.alice, str(venv)], check=True)
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", mode, str(whl))
    assert done.returncode == 0, done.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for _ in range(2):  # the second run imports whatever bytecode the first left
        out = subprocess.run(["runuser", "-u", users.alice, "--", str(venv / "bin/python"), "-c",
                              f"import {name}, {name}_data"], capture_output=True, text=True, cwd="/", env=env)
        assert out.stdout == "A\nA\n", out.stderr
    sourceless = subprocess.run([str(venv / "bin/python"), "-c", f"import {name}_only"], capture_output=True,
                                text=True, cwd="/")
    assert sourceless.stdout == "B\n", sourceless.stderr
    # the shipped pyc is nowhere in the store or the venv (only the sourceless module's copy of those bytes), and
    # verify finds the tree and the venv's RECORD consistent
    shipped = (workdir / f"{name}_b.pyc").read_bytes()
    site = next(venv.glob("lib/python*/site-packages"))
    holding = [p for top in (group_store / "trees", site) for p in top.rglob("*")
               if p.is_file() and not p.is_symlink() and p.read_bytes() == shipped]
    assert [p.name for p in holding] == [f"{name}_only.pyc"] * len(holding) and holding, holding
    verified = run(users.alice, "--store", str(group_store), "verify", "--full")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _ep_wheel(directory: Path, name: str, lines: str) -> Path:
    files = {f"{name}/__init__.py": b"def main():\n    print('main ran')\n",
             f"{name}-1.0.dist-info/entry_points.txt": f"[console_scripts]\n{lines}\n".encode()}
    whl = make_wheel(directory, name, files=files)
    os.chmod(whl, 0o644)
    return whl


HOSTILE_ENTRY_POINTS = {
    "code in the value": ("tool = os:getcwd.__class__ and (print('X') or getcwd)", "dotted Python identifiers"),
    "code in the module": ("tool = os;print('X');import os:getcwd", "dotted Python identifiers"),
    "a continuation line": ("tool = os:getcwd\n  .x(print('X'))", "dotted Python identifiers"),
    "no callable": ("tool = os", "not of the form module:attribute"),
    "a keyword": ("tool = os:import", "dotted Python identifiers"),
    "python": ("python = os:getcwd", "would replace the venv's own python"),
    "python3.11": ("python3.11 = os:getcwd", "would replace the venv's own python3.11"),
    "activate": ("activate = os:getcwd", "would replace the venv's own activate"),
    "activate.fish": ("activate.fish = os:getcwd", "would replace the venv's own activate.fish"),
    "Activate.ps1": ("Activate.ps1 = os:getcwd", "would replace the venv's own Activate.ps1"),
    "a slash": ("../../lib/evil = os:getcwd", "is not a plain file name"),
    "a dot": (".hidden = os:getcwd", "is not a plain file name"),
    "a dash": ("-rf = os:getcwd", "is not a plain file name"),
}


@pytest.mark.parametrize("case", list(HOSTILE_ENTRY_POINTS))
def test_hostile_entry_points_are_refused_before_publishing(run: Runner, users: Users, workdir: Path,
                                                            group_store: Path, case: str) -> None:
    """Launchers that would run code of their own or replace the venv's own files: refused with one line naming the
    wheel and the entry point, before anything is published."""
    lines, expected = HOSTILE_ENTRY_POINTS[case]
    whl = _ep_wheel(workdir, "eptool", lines)
    line = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl)))
    assert whl.name in line and "entry point" in line and expected in line, line
    _empty_areas(group_store)


def test_hostile_entry_point_install_leaves_venv_alone(run: Runner, users: Users, workdir: Path,
                                                      group_store: Path) -> None:
    whl = _ep_wheel(workdir, "epinst", "tool = os:getcwd.__class__ and (print('X') or getcwd)")
    venv = workdir / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(["chown", "-R", users.alice, str(venv)], check=True)
    before = snapshot(venv)
    result = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl))
    line = one_line_error(result)
    assert "entry point 'tool'" in line and "X" not in result.stdout, line
    assert snapshot(venv) == before
    _empty_areas(group_store)


def test_good_entry_points_still_work_and_taken_names_are_refused(run: Runner, users: Users, workdir: Path,
                                                                  group_store: Path) -> None:
    """Extras and dotted attributes are fine; a name in bin/ held by something no distribution writes (a symlink)
    is refused at install, a launcher another distribution wrote is replaced, as pip does."""
    whl = _ep_wheel(workdir, "epgood", "ep-good = epgood:main [fancy, other]\npip = epgood:main")
    venv = workdir / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "bin/pip").write_text("#!/bin/sh\necho another distribution's launcher\n")
    os.symlink("python3", venv / "bin/ep-good")
    subprocess.run(["chown", "-R", users.alice, str(venv)], check=True)
    before = snapshot(venv)
    line = one_line_error(run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl)))
    assert f"entry point 'ep-good' would replace {venv}/bin/ep-good, which no distribution wrote" in line, line
    assert snapshot(venv) == before
    (venv / "bin/ep-good").unlink()
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl))
    assert done.returncode == 0, done.stderr
    for script in ("ep-good", "pip"):
        out = subprocess.run([str(venv / "bin" / script)], capture_output=True, text=True, cwd="/")
        assert out.stdout == "main ran\n", out.stderr


def test_entry_points_file_in_a_tree_is_never_opened_blocking(workdir: Path) -> None:
    """A FIFO (or anything but a regular file) where a tree's entry_points.txt should be: one-line error, no hang."""
    fifo = workdir / "entry_points.txt"
    os.mkfifo(fifo)
    with pytest.raises(EntryPointError, match="is not a regular file"):
        entrypoints.read(fifo, "x-1.0-py3-none-any.whl")


def test_store_files_an_install_reads_are_never_opened_blocking(workdir: Path) -> None:
    """A FIFO where a tree's ``.data/scripts`` file should be (its shebang is rewritten, so it is read, in every link
    mode): one-line error, no hang."""
    fifo = workdir / "tool"
    os.mkfifo(fifo)
    with pytest.raises(NotAFile, match="is not the regular file of 10 bytes"):
        read_tree_file(str(workdir), "tool", 10)


def test_compiling_a_tree_skips_a_fifo_instead_of_hanging(workdir: Path) -> None:
    """A FIFO where a module should be (its tree's owner planted it): the store's compiler leaves it to import time
    and compiles the rest, where py_compile's open would wait for a writer forever."""
    tree, out = workdir / "tree", workdir / "out"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg/a.py").write_text("A = 1\n")
    os.mkfifo(tree / "pkg/b.py")
    code = ("import sys\nfrom wheelstore.store import bytecode\nfrom wheelstore.base.interpreter import Interpreter\n"
            "bytecode._run_compiler(Interpreter.inspect(sys.executable), sys.argv[1], sys.argv[2], "
            "['pkg/a.py', 'pkg/b.py'], 'a tree')\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    subprocess.run([SYSTEM_PYTHON, "-c", code, str(tree), str(out)], check=True, timeout=60, cwd="/",
                   env={**os.environ, "PYTHONPATH": src})
    assert [p.name.split(".")[0] for p in (out / "pkg/__pycache__").iterdir()] == ["a"]


def test_listing_a_venv_never_opens_a_linked_metadata_blocking(workdir: Path) -> None:
    """A venv's METADATA is a link into a tree, whose owner may put a FIFO in its place: the venv's listing, which
    every install makes, names it from its directory instead of waiting for a writer (so it can be uninstalled)."""
    import threading

    from wheelstore.base.distinfo import Distribution, describe

    dist_info = workdir / "fifo-1.0.dist-info"
    dist_info.mkdir()
    os.mkfifo(dist_info / "METADATA")
    found: list[Distribution | None] = []
    reader = threading.Thread(target=lambda: found.append(describe(dist_info)), daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert len(found) == 1 and found[0] is not None, found
    assert (found[0].name, found[0].version) == ("fifo", "1.0"), found


def _plant(run: Runner, user: str, tree_file: Path, code: str) -> None:
    """As the tree's owner: open its directory for writing and replace ``tree_file`` by what ``code`` makes at
    ``sys.argv[1]``."""
    done = run.python(user, "import os, sys; d = os.path.dirname(sys.argv[1]); os.chmod(d, 0o755); "
                      f"os.unlink(sys.argv[1]); {code}", str(tree_file))
    assert done.returncode == 0, done.stderr


def test_edit_never_hangs_on_a_fifo_in_a_tree(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """bob publishes a tree, alice links it into her venv, bob puts a FIFO in place of one of its files: alice's
    ``edit`` fails with one line instead of waiting forever for a writer."""
    whl = make_wheel(workdir, "fifotree", files={"fifotree/__init__.py": b"", "fifotree/mod.py": b"X = 1\n"})
    os.chmod(whl, 0o644)
    assert run(users.bob, "--store", str(group_store), "realize", str(whl)).returncode == 0
    venv = workdir / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(["chown", "-R", users.alice, str(venv)], check=True)
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", "symlink",
               str(whl))
    assert done.returncode == 0, done.stderr
    tree = next(p for p in (group_store / "trees").iterdir() if not p.name.startswith("."))
    _plant(run, users.bob, tree / "fifotree/mod.py", "os.mkfifo(sys.argv[1], 0o644)")
    line = one_line_error(run(users.alice, "--store", str(group_store), "edit", "--venv", str(venv), "fifotree",
                              timeout=60))
    assert "fifotree/mod.py in the store is not a regular file" in line, line
    assert not list(venv.rglob(".*.wheelstore-edit")), "a half-made private copy was left behind"


def test_verify_spells_out_escape_sequences_in_names(run: Runner, users: Users, workdir: Path,
                                                    group_store: Path) -> None:
    """A file named with a terminal escape sequence, planted by a tree's owner: verify names it, escaped, and its
    JSON keeps the exact name."""
    whl = make_wheel(workdir, "esctree", files={"esctree/__init__.py": b"", "esctree/mod.py": b"X = 1\n"})
    os.chmod(whl, 0o644)
    assert run(users.bob, "--store", str(group_store), "realize", str(whl)).returncode == 0
    tree = next(p for p in (group_store / "trees").iterdir() if not p.name.startswith("."))
    evil = "esctree/\x1b[31mred\x1b]0;pwned\x07.py"
    _plant(run, users.bob, tree / "esctree/mod.py", f"open(os.path.join(d, {evil.split('/')[1]!r}), 'w')")
    human = run(users.alice, "--store", str(group_store), "verify")
    assert human.returncode != 0, human.stdout
    assert "\x1b" not in human.stdout + human.stderr and "\x07" not in human.stdout + human.stderr
    assert "\\x1b[31mred\\x1b]0;pwned\\x07.py" in human.stdout, human.stdout
    machine = run(users.alice, "--store", str(group_store), "verify", "--json")
    assert evil in [d["path"] for d in json.loads(machine.stdout)["damaged"]], machine.stdout


def test_warning_lines_are_printable_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's warning lines go through the same escaping as its error lines."""
    import logging

    from wheelstore.cli import main as cli

    logger = logging.getLogger("wheelstore")
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        cli._handler(logging.WARNING)
        logger.warning("ignoring %s", "esc\x1b[2J\u202eyp")
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    assert capsys.readouterr().err == "warning: ignoring esc\\x1b[2J\\u202eyp\n"


def test_wheel_member_names_are_spelled_out_in_errors(run: Runner, users: Users, workdir: Path,
                                                     group_store: Path) -> None:
    """Members named with an escape sequence or a bidi override: every one-line error names them escaped, whether
    the message quotes the name or not (a .dist-info directory's name is not quoted)."""
    evil = "escm/\x1b[2J\u202eyp.py"
    whl = make_wheel(workdir, "escm", files={"escm/__init__.py": b"", evil: b""}, record_overrides={evil: None})
    os.chmod(whl, 0o644)
    line = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl)))
    assert "\x1b" not in line and "\u202e" not in line, line
    assert "escm/\\x1b[2J\\u202eyp.py" in line and "is missing from RECORD" in line, line
    renamed = workdir / "renamed"
    renamed.mkdir()
    with zipfile.ZipFile(make_wheel(renamed, "escd")) as zf:
        members = {i.filename.replace("escd-1.0.dist-info", "escd\x1b[2J-1.0.dist-info"): zf.read(i)
                   for i in zf.infolist()}
    whl = renamed / "escd-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    os.chmod(whl, 0o644)
    line = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl)))
    assert "escd\\x1b[2J-1.0.dist-info does not match the file name" in line, line
    _empty_areas(group_store)


@pytest.mark.parametrize("script", ["python", "python3", "activate"])
def test_data_scripts_named_as_the_venvs_own_files_are_refused(run: Runner, users: Users, workdir: Path,
                                                               group_store: Path, script: str) -> None:
    """A ``.data/scripts`` file would land in ``bin/`` as well: the venv's own names are refused there too."""
    whl = make_wheel(workdir, "dscript", files={"dscript/__init__.py": b"",
                                                f"dscript-1.0.data/scripts/{script}": b"#!python\nprint('X')\n"})
    os.chmod(whl, 0o644)
    line = one_line_error(run(users.bob, "--store", str(group_store), "realize", str(whl)))
    assert f"script 'dscript-1.0.data/scripts/{script}' would replace the venv's own {script}" in line, line
    _empty_areas(group_store)
