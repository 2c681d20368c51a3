"""Attacks on issue 14's install path (acceptance 1 and 7), found after the merge: what a hostile wheel or a member
rewriting HIS OWN tree and manifest can still do to alice's venvs and root's.

Each test fails on the code it was written against and shows the harm concretely.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error, snapshot
from .wheelmaker import make_wheel


def _key(whl: Path) -> str:
    return hashlib.sha256(whl.read_bytes()).hexdigest()


def _venv(path: Path, user: str | None) -> Path:
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    if user:
        subprocess.run(["chown", "-R", user, str(path)], check=True)
    return path


def _realize(run: Runner, user: str, store: Path, whl: Path) -> str:
    whl.chmod(0o644)
    done = run(user, "--store", str(store), "realize", str(whl))
    assert done.returncode == 0, done.stderr
    return _key(whl)


# -- the venv's own files, through the data scheme ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["bin/python3", "bin/activate", "pyvenv.cfg"])
def test_a_data_file_cannot_replace_the_venvs_own_files(
    run: Runner, users: Users, workdir: Path, group_store: Path, target: str
) -> None:
    """``.data/scripts/python3`` is refused (acceptance 7), but ``.data/data`` installs into the venv's prefix, so
    ``.data/data/bin/python3`` lands on the very same file: bob's wheel replaces alice's interpreter (or her activate
    script, or pyvenv.cfg) with his own program. It must be refused like the scripts one, with nothing installed."""
    whl = make_wheel(workdir, "dd", files={"dd/__init__.py": b"",
                                           f"dd-1.0.data/data/{target}": b"#!/bin/sh\necho bob was here\n"},
                     executable=(f"dd-1.0.data/data/{target}",))
    whl.chmod(0o644)
    realized = run(users.bob, "--store", str(group_store), "realize", str(whl))
    venv = _venv(workdir / "venv", users.alice)
    before = snapshot(venv)
    if realized.returncode != 0:  # refused when published: fine, as for .data/scripts
        assert "would replace the venv's own" in one_line_error(realized)
        return
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", "copy",
               str(whl))
    assert done.returncode != 0, f"installed; {target} is now: {(venv / target).read_bytes()[:60]!r}"
    assert "would replace the venv's own" in one_line_error(done)
    assert snapshot(venv) == before


#: bob, as himself, rewrites HIS OWN published tree (running ``ops`` in it, its directories opened for writing and
#: sealed again after) and then HIS OWN manifest to match it exactly: every entry's size, sha256, mode and times, so
#: that the install's check and ``verify`` find the tree intact. He may: the tree and the manifest entry are his.
REWRITE = r"""
import hashlib, json, os, stat, sys
store, key, ops = sys.argv[1:4]
tree = os.path.join(store, "trees", key)
manifest = os.path.join(store, "manifests", key + ".json")
modes = {}
for top, _dirs, _files in os.walk(tree):
    modes[os.path.relpath(top, tree)] = stat.S_IMODE(os.stat(top).st_mode)
    os.chmod(top, 0o755)
os.chdir(tree)
exec(ops)
files, dirs = {}, []
for top, subdirs, names in sorted(os.walk(".", topdown=False)):
    rel = os.path.normpath(top)
    os.chmod(top, modes.get(rel, modes["."]))
for top, subdirs, names in os.walk("."):
    dirs += [os.path.normpath(os.path.join(top, d)) for d in subdirs]
    for n in names:
        rel = os.path.normpath(os.path.join(top, n))
        st = os.lstat(rel)
        if stat.S_ISREG(st.st_mode):
            data = open(rel, "rb").read()
            files[rel] = [st.st_size, hashlib.sha256(data).hexdigest(), stat.S_IMODE(st.st_mode), st.st_mtime_ns,
                          st.st_ctime_ns]
doc = json.load(open(manifest))
doc["files"], doc["dirs"] = files, sorted(dirs)
doc.pop("rpaths", None)
os.unlink(manifest)
fd = os.open(manifest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
os.write(fd, json.dumps(doc).encode())
os.close(fd)
"""


def _rewrite(run: Runner, users: Users, store: Path, key: str, ops: str) -> None:
    done = run.python(users.bob, REWRITE, str(store), key, ops)
    assert done.returncode == 0, done.stderr
    assert run(users.bob, "--store", str(store), "verify").returncode == 0, "bob's rewrite should look intact"


def test_a_rewritten_tree_cannot_install_a_script_over_the_venvs_python(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob publishes a wheel with an innocent ``.data/scripts/dsr-tool``, then renames it to ``python3`` in his own
    tree and manifest (both checks pass: the name is a plain name in a known scheme). The publish-time refusal of
    scripts named like the venv's own files is so bypassed: alice's install replaces her venv's ``bin/python3``."""
    whl = make_wheel(workdir, "dsr", files={"dsr/__init__.py": b"",
                                            "dsr-1.0.data/scripts/dsr-tool": b"#!/bin/sh\necho bob was here\n"},
                     executable=("dsr-1.0.data/scripts/dsr-tool",))
    key = _realize(run, users.bob, group_store, whl)
    _rewrite(run, users, group_store, key,
             "os.rename('dsr-1.0.data/scripts/dsr-tool', 'dsr-1.0.data/scripts/python3')")
    venv = _venv(workdir / "venv", users.alice)
    before = snapshot(venv)
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl))
    assert done.returncode != 0, f"installed; bin/python3 is now {(venv / 'bin/python3').read_bytes()[:40]!r}"
    assert "would replace the venv's own python3" in one_line_error(done)
    assert snapshot(venv) == before


# -- what install reads from a tree: never through a link, never blocking ----------------------------------------------


def _plant(run: Runner, user: str, tree_file: Path, code: str) -> None:
    """As the tree's owner: open its directory for writing and replace ``tree_file`` by what ``code`` makes at
    ``sys.argv[1]`` (the manifest is left as it was: the check that runs meanwhile would flag it)."""
    done = run.python(user, "import os, sys; d = os.path.dirname(sys.argv[1]); os.chmod(d, 0o755); "
                      f"os.unlink(sys.argv[1]); {code}", str(tree_file))
    assert done.returncode == 0, done.stderr


def _release(fifo: Path) -> None:
    """Wake whoever is blocked opening ``fifo`` for reading (they then read its end)."""
    for _ in range(20):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return
        time.sleep(0.1)


def _script_wheels(run: Runner, users: Users, workdir: Path, store: Path, count: int) -> tuple[list[Path], str]:
    """``count`` of bob's wheels, the last with a ``.data/scripts`` file; return them and that one's key."""
    d = workdir / "wheels"
    d.mkdir(mode=0o755)
    wheels = [make_wheel(d, f"pad{i}", files={f"pad{i}/__init__.py": b""}) for i in range(count - 1)]
    wheels.append(make_wheel(d, "sfs", files={"sfs/__init__.py": b"",
                                              "sfs-1.0.data/scripts/sfs-tool": b"#!python\nprint('tool')\n"},
                             executable=("sfs-1.0.data/scripts/sfs-tool",)))
    keys = [_realize(run, users.bob, store, w) for w in wheels]
    return wheels, keys[-1]


def test_a_fifo_in_place_of_a_script_never_hangs_an_install(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """An install of eight trees or more checks them in a child while it links. bob puts a FIFO in place of the
    ``.data/scripts`` file of his tree: the install opens it (to rewrite its shebang) blocking, before the check's
    answer is asked for, and waits forever for a writer. It must fail with one line instead, nothing left in the
    venv."""
    wheels, key = _script_wheels(run, users, workdir, group_store, 8)
    _plant(run, users.bob, group_store / "trees" / key / "sfs-1.0.data/scripts/sfs-tool",
           "os.mkfifo(sys.argv[1], 0o644)")
    venv = _venv(workdir / "venv", users.alice)
    before = snapshot(venv)
    try:
        done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", "copy",
                   *map(str, wheels), timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("alice's install hung on bob's FIFO")
    line = one_line_error(done)
    assert "sfs" in line, line
    assert snapshot(venv) == before


def test_roots_install_never_reads_a_script_through_a_link(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Root installs bob's tree (copy, as root should). Between root's check and its linking (a window bob can hit
    by swapping back and forth; a test hook holds it open here), bob swaps his ``.data/scripts`` file for a symlink
    to a file only root may read: root's install reads the secret through the link and writes it into root's venv
    as ``bin/sfs-tool``, mode 0755, where bob reads it. Content substitution is bob's right; reading what he may not
    is not: the install must read tree files without following links, and refuse."""
    wheels, key = _script_wheels(run, users, workdir, group_store, 1)
    private = workdir / "root-only"
    private.mkdir(mode=0o700)
    secret = private / "secret"
    secret.write_text("root's secret\n")
    secret.chmod(0o644)  # readable, but only by who may enter root-only/
    venv = _venv(workdir / "venv-root", None)
    hooks = workdir / "hooks"
    hooks.mkdir()
    proc = run.popen(None, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", "copy",
                     str(wheels[0]), env={"WHEELSTORE_TEST_HOOK": "linking=wait",
                                          "WHEELSTORE_TEST_HOOK_DIR": str(hooks)})
    deadline = time.monotonic() + 60
    while not list(hooks.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    _plant(run, users.bob, group_store / "trees" / key / "sfs-1.0.data/scripts/sfs-tool",
           f"os.symlink({str(secret)!r}, sys.argv[1])")
    for marker in hooks.iterdir():
        marker.unlink()
    out, err = proc.communicate(timeout=60)
    tool = venv / "bin" / "sfs-tool"
    leaked = run.python(users.bob, "import sys; print(open(sys.argv[1]).read(), end='')", str(tool))
    assert "root's secret" not in leaked.stdout, f"bob read root's secret from {tool} (install: {out}{err})"
    assert proc.returncode != 0 and "sfs" in err, (out, err)


@pytest.mark.parametrize("planted", ["fifo", "zero"])
def test_a_fifo_or_device_as_metadata_does_not_hang_every_command_on_the_venv(
    run: Runner, users: Users, workdir: Path, group_store: Path, planted: str
) -> None:
    """alice installed bob's tree (her default mode links its METADATA into the store). bob then puts a FIFO, or a
    symlink to /dev/zero, in place of his tree's METADATA. Every wheelstore command that lists alice's venv reads
    each METADATA with a blocking, unbounded open: ``list``, an install of anything else, even ``uninstall`` of
    bob's distribution (her way out) hang forever (or eat memory without end). Acceptance 7: special files are
    never opened blocking."""
    whl = make_wheel(workdir, "mdf", files={"mdf/__init__.py": b""})
    key = _realize(run, users.bob, group_store, whl)
    other = make_wheel(workdir, "mdother", files={"mdother/__init__.py": b""})
    other.chmod(0o644)
    venv = _venv(workdir / "venv", users.alice)
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl))
    assert done.returncode == 0, done.stderr
    code = "os.mkfifo(sys.argv[1], 0o644)" if planted == "fifo" else "os.symlink('/dev/zero', sys.argv[1])"
    _plant(run, users.bob, group_store / "trees" / key / "mdf-1.0.dist-info/METADATA", code)
    for args in (("list", "--venv", str(venv)),
                 ("--store", str(group_store), "install", "--venv", str(venv), str(other)),
                 ("uninstall", "--venv", str(venv), "mdf")):
        try:
            done = run(users.alice, *args, timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"wheelstore {args[0] if args[0] != '--store' else 'install'} hung on bob's {planted}")
        assert "Traceback" not in done.stderr, done.stderr
    assert not (venv / "lib").exists() or not list(venv.glob("lib/python3*/site-packages/mdf*")), \
        "uninstall should have removed bob's distribution"


# -- bytecode compiled from a member's tree by root (or the store's owner) --------------------------------------------


def _uncompiled_trees(run: Runner, users: Users, workdir: Path, store: Path, count: int) -> tuple[list[Path], str]:
    """``count`` of bob's trees, published without bytecode (so that an install compiles a pyc unit for them), the
    last with a module ``cmp/settings.py``; return the wheels and that one's key."""
    d = workdir / "wheels"
    d.mkdir(mode=0o755)
    wheels = [make_wheel(d, f"cpad{i}", files={f"cpad{i}/__init__.py": b""}) for i in range(count - 1)]
    wheels.append(make_wheel(d, "cmp", files={"cmp/__init__.py": b"", "cmp/settings.py": b"DEBUG = False\n"}))
    keys = []
    for w in wheels:
        w.chmod(0o644)
        done = run(users.bob, "--store", str(store), "realize", "--no-compile", str(w))
        assert done.returncode == 0, done.stderr
        keys.append(_key(w))
    return wheels, keys[-1]


def test_roots_compiler_never_reads_a_module_through_a_link(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Root installs eight of bob's trees that have no bytecode: root compiles each into a pyc unit and publishes it
    (root's units are trusted), while the trees' check runs in a child. bob has put a symlink to a root-only
    ``settings.py`` in place of his module: root's compiler reads it through the link, and the secret's constants
    end up in a world-readable, root-owned pyc in the store, for good (the install is taken back; the unit stays).
    The same holds for the store's owner (alice), who compiles members' trees too."""
    wheels, key = _uncompiled_trees(run, users, workdir, group_store, 8)
    private = workdir / "root-only"
    private.mkdir(mode=0o700)
    secret = private / "settings.py"
    secret.write_text("PASSWORD = 'hunter2-of-root'\n")
    _plant(run, users.bob, group_store / "trees" / key / "cmp/settings.py", f"os.symlink({str(secret)!r}, sys.argv[1])")
    venv = _venv(workdir / "venv-root", None)
    run(None, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", "copy", *map(str, wheels),
        timeout=60)
    found = run.python(users.bob, "import glob, sys\n"
                       "for p in glob.glob(sys.argv[1] + '/trees/*-*/**/*.pyc', recursive=True):\n"
                       "    if b'hunter2-of-root' in open(p, 'rb').read(): print(p)", str(group_store))
    assert found.stdout == "", f"bob reads root's secret in {found.stdout}"


def test_a_fifo_in_place_of_a_module_never_hangs_roots_compiler(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """As above, with a FIFO in place of bob's module: root's compiler waits for a writer forever, and so does
    root's install."""
    wheels, key = _uncompiled_trees(run, users, workdir, group_store, 8)
    _plant(run, users.bob, group_store / "trees" / key / "cmp/settings.py", "os.mkfifo(sys.argv[1], 0o644)")
    venv = _venv(workdir / "venv-root", None)
    try:
        done = run(None, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", "copy",
                   *map(str, wheels), timeout=30)
    except subprocess.TimeoutExpired:
        _release(group_store / "trees" / key / "cmp/settings.py")  # the compiler outlives the install it served
        pytest.fail("root's install hung compiling bob's FIFO")
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("mode", ["copy", "reflink"])
def test_roots_copy_never_reads_through_a_linked_directory_of_a_tree(
    run: Runner, users: Users, workdir: Path, group_store: Path, filesystems: object, mode: str
) -> None:
    """Root copies bob's tree into root's venv. Between root's check and its copying (a window bob can hit by
    swapping back and forth; a test hook holds it open), bob swaps a DIRECTORY of his tree for a symlink to a
    directory only root may enter. Each file is opened with O_NOFOLLOW, but only its last component is: root copies
    the file there (mode kept, 0644) into its venv, where bob reads it."""
    store = group_store
    if mode == "reflink":  # a store and venv on XFS, where reflinks work
        from .conftest import Filesystems

        assert isinstance(filesystems, Filesystems)
        base = Path(__import__("tempfile").mkdtemp(dir=filesystems.xfs))
        base.chmod(0o1777)
        store = base / "store"
        assert run(users.alice, "init", str(store), "--group", users.group).returncode == 0
        workdir = base
    d = workdir / "wheels"
    d.mkdir(mode=0o755)
    whl = make_wheel(d, "lk", files={"lk/__init__.py": b"", "lk/sub/conf.txt": b"nothing here\n"})
    key = _realize(run, users.bob, store, whl)
    private = workdir / "root-only"
    private.mkdir(mode=0o700)
    (private / "conf.txt").write_text("root's secret\n")
    (private / "conf.txt").chmod(0o644)  # readable, but only by who may enter root-only/
    venv = _venv(workdir / "venv-root", None)
    hooks = workdir / "hooks"
    hooks.mkdir()
    proc = run.popen(None, "--store", str(store), "install", "--venv", str(venv), "--link-mode", mode, str(whl),
                     env={"WHEELSTORE_TEST_HOOK": "linking=wait", "WHEELSTORE_TEST_HOOK_DIR": str(hooks)})
    deadline = time.monotonic() + 60
    while not list(hooks.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    done = run.python(users.bob, "import os, sys; t = sys.argv[1]; os.chmod(t + '/lk', 0o755); "
                      "os.rename(t + '/lk/sub', t + '/lk/.sub'); os.symlink(sys.argv[2], t + '/lk/sub')",
                      str(store / "trees" / key), str(private))
    assert done.returncode == 0, done.stderr
    for marker in hooks.iterdir():
        marker.unlink()
    out, err = proc.communicate(timeout=60)
    copied = next(venv.glob("lib/python3*/site-packages/lk/sub/conf.txt"), None)
    if copied is not None:
        leaked = run.python(users.bob, "import sys; print(open(sys.argv[1]).read(), end='')", str(copied))
        assert "root's secret" not in leaked.stdout, f"bob read root's secret from {copied} (install: {out}{err})"
    assert proc.returncode != 0 and "lk" in err, (out, err)


#: bob, as himself, publishes the pyc unit of HIS OWN tree (trusted: he could rewrite the tree anyway) with one more
#: file than bytecode: ``<name>-1.0.data/data/bin/python3``
PLANT_UNIT_WITH_DATA = r"""
import os, sys
from wheelstore.store import bytecode
from wheelstore.store.store import Store
from wheelstore.base.interpreter import Interpreter

store_path, key, extra = sys.argv[1:4]
store = Store.open(store_path)
tree = store.lookup(key)
interpreter = Interpreter.inspect(sys.executable)

def compile_with_extra(_interpreter, src, out, modules, _what):
    os.makedirs(os.path.dirname(os.path.join(out, extra)))
    with open(os.path.join(out, extra), "w") as f:
        f.write("#!/bin/sh\necho bob was here\n")

bytecode._run_compiler = compile_with_extra
print(bytecode._publish(store, tree, interpreter, bytecode.unit_key(tree, interpreter)).key)
"""


def test_a_pyc_unit_cannot_install_a_data_file_over_the_venvs_python(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """A tree's pyc unit is linked like the tree, its ``.data`` files included, and its manifest passes the same
    checks. bob's unit for his own tree carries ``.data/data/bin/python3``: alice's install must refuse it as it
    refuses the same file in a tree, not replace her venv's interpreter."""
    whl = make_wheel(workdir, "dsu", files={"dsu/__init__.py": b"X = 1\n"})
    whl.chmod(0o644)
    assert run(users.bob, "--store", str(group_store), "realize", "--no-compile", str(whl)).returncode == 0
    planted = subprocess.run([str(run.tool.parent / "python"), "-c", PLANT_UNIT_WITH_DATA, str(group_store),
                              _key(whl), "dsu-1.0.data/data/bin/python3"], capture_output=True, text=True,
                             env=run.env(users.bob), cwd="/", timeout=120,
                             **run.popen_kwargs(users.bob, 0o022))
    assert planted.returncode == 0, planted.stderr
    venv = _venv(workdir / "venv", users.alice)
    before = snapshot(venv)
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", "symlink",
               str(whl))
    assert done.returncode != 0, f"installed; bin/python3 is now {(venv / 'bin/python3').read_bytes()[:40]!r}"
    assert "would replace the venv's own" in one_line_error(done)
    assert snapshot(venv) == before


def test_a_deeply_nested_wheel_is_refused_or_installed_without_a_traceback(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """A hostile wheel whose one module sits 1,400 directories deep (a 2.8 KB name, within the 3,000 bytes wheelstore
    allows): realize, install, verify and uninstall each recurse once per directory level. Each must refuse it with one
    line or do its job: never a RecursionError's traceback (the same tree is everyone's to verify and gc)."""
    deep = "/".join(["a"] * 1400) + "/m.py"
    whl = make_wheel(workdir, "deep", files={"deep/__init__.py": b"", deep: b"X = 1\n"})
    whl.chmod(0o644)
    try:
        realized = run(users.bob, "--store", str(group_store), "realize", str(whl))
        if realized.returncode != 0:
            one_line_error(realized)
            return
        venv = _venv(workdir / "venv", users.alice)
        for args in (("--store", str(group_store), "install", "--venv", str(venv), "--link-mode", "copy", str(whl)),
                     ("--store", str(group_store), "verify"),
                     ("--store", str(group_store), "verify", "--full"),
                     ("uninstall", "--venv", str(venv), "deep")):
            done = run(users.alice, *args)
            assert "Traceback" not in done.stderr + done.stdout, (args, done.stderr[-300:])
    finally:  # shutil.rmtree, which the fixtures clean up with, recurses too
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def test_a_manifest_nested_too_deep_is_refused_when_read() -> None:
    """The same depth in a manifest its publisher rewrote (his tree may nest as deep as he likes): refused by the
    check every manifest passes, before any walk recurses into it."""
    from wheelstore.store.manifest import Manifest

    deep = "/".join(["a"] * 1400)
    doc = {"format": 1, "key": "0" * 64, "wheel": "deep-1.0-py3-none-any.whl", "name": "deep", "version": "1.0",
           "dist_info": "deep-1.0.dist-info", "root_is_purelib": True, "publisher_uid": 0, "publisher": "bob",
           "owner_uid": 0, "published_at": "now",
           "dirs": [deep[: i * 2 + 1] for i in range(1400)],
           "files": {deep + "/m.py": [1, "0" * 64, 0o444, 0, 0]}}
    with pytest.raises(ValueError, match="nested deeper than"):
        Manifest.from_json(json.dumps(doc).encode())
