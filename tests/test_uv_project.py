"""uv projects (issue 21): ``wheelstore sync`` with no inputs takes a real uv project's ``uv.lock`` (locked by its user
with the real uv next to wheelstore, against a local index), selects from it as ``uv sync`` does, fills the project's
venv from a shared group store, and leaves a venv that ``uv run`` and ``uv sync --locked`` keep as it is.

Each user has their own uv cache and home; the index serves wheels made here and flit_core, the projects' backend.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from .conftest import SYSTEM_PYTHON, Runner, Users, flit_core_wheel, published
from .pyindex import PyIndex
from .wheelmaker import make_wheel

BACKEND = '[build-system]\nrequires = ["flit_core>=3.2"]\nbuild-backend = "flit_core.buildapi"\n\n'

#: alice's project: its dependencies (alpha -> beta), two extras, the dev group (a default group) and another
ALICE = ('[project]\nname = "myproj"\nversion = "0.1"\ndescription = "alice\'s project"\nrequires-python = ">=3.10"\n'
         'dependencies = ["alpha"]\n\n[project.optional-dependencies]\nplot = ["gamma"]\nfast = ["epsilon"]\n\n'
         '[dependency-groups]\ndev = ["devtool"]\ndocs = ["docsy"]\n')
#: bob's project: alpha and beta as alice has them, and delta that only he uses
BOB = ('[project]\nname = "bobproj"\nversion = "0.1"\ndescription = "bob\'s project"\nrequires-python = ">=3.10"\n'
       'dependencies = ["alpha", "beta", "delta"]\n')
#: a workspace: its root depends on alpha and on its member under packages/, which depends on gamma
WORKSPACE = ('[project]\nname = "wsroot"\nversion = "0.1"\ndescription = "a workspace root"\n'
             'requires-python = ">=3.10"\ndependencies = ["alpha", "member"]\n\n'
             '[tool.uv.sources]\nmember = { workspace = true }\n\n[tool.uv.workspace]\nmembers = ["packages/*"]\n')
MEMBER = ('[project]\nname = "member"\nversion = "0.1"\ndescription = "a workspace member"\n'
          'requires-python = ">=3.10"\ndependencies = ["gamma"]\n')

#: (name, version, requires) of every wheel the index serves besides flit_core
WHEELS = (("alpha", "1.0", ("beta>=1",)), ("beta", "1.0", ()), ("beta", "2.0", ()), ("gamma", "1.0", ()),
          ("epsilon", "1.0", ()), ("devtool", "1.0", ()), ("docsy", "1.0", ()), ("delta", "1.0", ()))


def _write(root: Path, pyproject: str, package: str) -> None:
    (root / package).mkdir(parents=True)
    (root / "pyproject.toml").write_text(BACKEND + pyproject)
    (root / package / "__init__.py").write_text("VALUE = 1\n")


@dataclass(frozen=True)
class Lab:
    """The index, the projects as their owners locked them, and how to run things as a user the way a user would."""

    run: Runner
    users: Users
    index: str
    homes: Path  #: one directory per user, theirs, holding their uv cache
    templates: Path  #: alice/, bob/ and workspace/, each with its uv.lock

    def env(self, user: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        cache = self.homes / (user or "root") / "uv"
        return self.run.env(user, {"UV_DEFAULT_INDEX": self.index, "UV_CACHE_DIR": str(cache),
                                   "UV_PYTHON_DOWNLOADS": "never", **(extra or {})})

    def as_user(self, user: str | None, *cmd: str | os.PathLike[str], cwd: Path,
                env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([os.fspath(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                              env=self.env(user, env), timeout=120, stdin=subprocess.DEVNULL,
                              **self.run.popen_kwargs(user, 0o022))

    def uv(self, user: str | None, *args: str, cwd: Path, env: Mapping[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
        return self.as_user(user, self.run.tool.parent / "uv", *args, cwd=cwd, env=env)

    def ws(self, user: str | None, store: Path, *args: str, cwd: Path = Path("/"), env: Mapping[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
        return self.as_user(user, self.run.tool, "--store", str(store), *args, cwd=cwd, env=env)

    def project(self, name: str, where: Path, owner: str) -> Path:
        """A copy of a locked project, the user's own."""
        dest = where / name
        shutil.copytree(self.templates / name, dest, symlinks=True)
        subprocess.run(["chown", "-R", owner, str(dest)], check=True)
        return dest


def _own(path: Path, user: str, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    subprocess.run(["chown", "-R", user, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def lab(run: Runner, users: Users, base_dir: Path) -> Iterator[Lab]:
    top = base_dir / "uvproject"
    wheels, homes, templates = top / "wheels", top / "homes", top / "templates"
    for d in (top, wheels, homes, templates):
        d.mkdir(mode=0o755)
    served = [make_wheel(wheels, name, version, requires=requires) for name, version, requires in WHEELS]
    for user in (users.alice, users.bob, "root"):
        _own(homes / user, user, 0o700)
    _write(templates / "alice", ALICE, "myproj")
    _write(templates / "bob", BOB, "bobproj")
    _write(templates / "workspace", WORKSPACE, "wsroot")
    _write(templates / "workspace" / "packages" / "member", MEMBER, "member")
    with PyIndex() as index:
        for wheel in (*served, flit_core_wheel()):
            index.add(wheel)
        found = Lab(run, users, index.simple_url, homes, templates)
        for name, owner in (("alice", users.alice), ("bob", users.bob), ("workspace", users.alice)):
            _own(templates / name, owner)
            done = found.uv(owner, "lock", cwd=templates / name)
            assert done.returncode == 0, done.stderr
        yield found


def _installed(venv: Path) -> dict[str, str]:
    """{name: version} of every distribution in ``venv``, from its metadata."""
    (site,) = venv.glob("lib/python3*/site-packages")
    found: dict[str, str] = {}
    for dist_info in site.glob("*.dist-info"):
        meta = HeaderParser().parsestr((dist_info / "METADATA").read_text())
        found[canonicalize_name(meta["Name"])] = meta["Version"]
    return found


#: an entry of a venv: its kind, its symlink's target or its (st_dev, st_ino), mtime_ns and size
Entry = tuple[int, object, int, int]


def _entries(venv: Path) -> dict[str, Entry]:
    """Every entry of ``venv`` (symlinks not followed): what ``uv run`` or ``uv sync`` must leave as it is."""
    found: dict[str, Entry] = {}
    paths = [os.fspath(venv)]
    for directory, dirs, files in os.walk(venv):  # a symlinked directory is listed, never entered
        paths += (os.path.join(directory, name) for name in (*dirs, *files))
    for path in paths:
        st = os.lstat(path)
        what: object = os.readlink(path) if stat.S_ISLNK(st.st_mode) else (st.st_dev, st.st_ino)
        found[os.path.relpath(path, venv)] = (stat.S_IFMT(st.st_mode), what, st.st_mtime_ns, st.st_size)
    return found


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done


def _value(lab: Lab, user: str, venv: Path, module: str = "myproj") -> str:
    done = _ok(lab.as_user(user, venv / "bin" / "python", "-c", f"import {module}; print({module}.VALUE)",
                           cwd=Path("/")))
    return done.stdout.strip()


def _error(done: subprocess.CompletedProcess[str]) -> str:
    """The one line of a refusal: nothing else on stderr (not even which lock and venv), no traceback."""
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


#: the selections of point 1, each as ``uv sync`` spells it
SELECTIONS: Sequence[tuple[str, ...]] = (
    (), ("--extra", "plot"), ("--group", "docs"), ("--no-dev",), ("--only-group", "docs"), ("--all-groups",),
    ("--all-extras",), ("--extra", "fast", "--no-dev", "--group", "docs"))


def test_sync_selects_the_locked_set_as_uv_sync_does(lab: Lab, users: Users, group_store: Path,
                                                    workdir: Path) -> None:
    alice = users.alice
    proj = lab.project("alice", workdir, alice)
    venv = proj / ".venv"
    done = _ok(lab.ws(alice, group_store, "sync", "--project", str(proj)))
    assert f"using {proj / 'uv.lock'} and the venv at {venv}" in done.stderr
    assert _installed(venv) == {"myproj": "0.1", "alpha": "1.0", "beta": "2.0", "devtool": "1.0"}
    for flags in SELECTIONS:
        reference = workdir / ("ref" + "".join(flags).replace("-", "_"))
        _ok(lab.uv(alice, "sync", "--locked", *flags, cwd=proj, env={"UV_PROJECT_ENVIRONMENT": str(reference)}))
        _ok(lab.ws(alice, group_store, "sync", "--project", str(proj), *flags))
        assert _installed(venv) == _installed(reference), flags
    assert _installed(venv)["epsilon"] == "1.0"  # the last selection: uv's own set, not just a subset of it

    _ok(lab.ws(alice, group_store, "sync", "--project", str(proj)))
    assert _value(lab, alice, venv) == "1"
    (proj / "myproj" / "__init__.py").write_text("VALUE = 2\n")
    assert _value(lab, alice, venv) == "2"  # the project is editable: its own source is imported

    sub = _own(proj / "myproj" / "sub", alice)  # from a subdirectory, no --project: the lock of its project
    again = _ok(lab.ws(alice, group_store, "sync", "--extra", "plot", cwd=sub))
    assert f"using {proj / 'uv.lock'}" in again.stderr and "+ gamma==1.0" in again.stdout, again.stdout
    assert _installed(venv) == {"myproj": "0.1", "alpha": "1.0", "beta": "2.0", "devtool": "1.0", "gamma": "1.0"}
    assert not (sub / ".venv").exists()


def _uv_keeps(lab: Lab, user: str, proj: Path, venv: Path, *flags: str, env: Mapping[str, str] | None = None) -> None:
    """``uv run`` and ``uv sync --locked`` (with ``flags``) in ``proj`` succeed and change no entry of ``venv``."""
    before = _entries(venv)
    _ok(lab.uv(user, "run", *flags, "python", "-c", "import myproj, alpha", cwd=proj, env=env))
    synced = _ok(lab.uv(user, "sync", "--locked", *flags, cwd=proj, env=env))
    assert _entries(venv) == before, synced.stderr


def test_uv_run_and_uv_sync_keep_the_venv(lab: Lab, users: Users, group_store: Path, workdir: Path) -> None:
    alice = users.alice
    proj = lab.project("alice", workdir, alice)
    venv = proj / ".venv"
    _ok(lab.ws(alice, group_store, "sync", "--project", str(proj)))
    _uv_keeps(lab, alice, proj, venv)
    _ok(lab.ws(alice, group_store, "sync", "--project", str(proj), "--extra", "plot"))
    _uv_keeps(lab, alice, proj, venv, "--extra", "plot")
    assert _installed(venv)["gamma"] == "1.0"

    env = {"UV_PROJECT_ENVIRONMENT": "env"}  # relative to the project's root, as uv takes it
    done = _ok(lab.ws(alice, group_store, "sync", cwd=proj, env=env))
    assert f"the venv at {proj / 'env'}" in done.stderr
    assert _installed(proj / "env") == {"myproj": "0.1", "alpha": "1.0", "beta": "2.0", "devtool": "1.0"}
    assert "gamma" in _installed(venv)  # .venv is not the project's venv now: untouched
    _uv_keeps(lab, alice, proj, proj / "env", env=env)
    again = _ok(lab.ws(alice, group_store, "sync", "--extra", "plot", cwd=proj, env=env))  # the venv is there now
    assert "+ gamma==1.0" in again.stdout and "created" not in again.stderr, again.stderr
    _uv_keeps(lab, alice, proj, proj / "env", "--extra", "plot", env=env)
    active = {"VIRTUAL_ENV": str(proj / "env")}  # an activated venv is not the project's, for uv sync nor for us
    _ok(lab.ws(alice, group_store, "sync", "--no-dev", cwd=proj, env=active))
    assert "devtool" not in _installed(venv) and "devtool" in _installed(proj / "env")


def test_a_workspace_root_and_member_are_editable_and_kept(lab: Lab, users: Users, group_store: Path,
                                                           workdir: Path) -> None:
    alice = users.alice
    root = lab.project("workspace", workdir, alice)
    member = root / "packages" / "member"
    venv = root / ".venv"
    _ok(lab.ws(alice, group_store, "sync", cwd=root))
    assert _installed(venv) == {"wsroot": "0.1", "member": "0.1", "alpha": "1.0", "beta": "2.0", "gamma": "1.0"}
    (member / "member" / "__init__.py").write_text("VALUE = 3\n")
    assert _value(lab, alice, venv, "member") == "3" and _value(lab, alice, venv, "wsroot") == "1"
    before = _entries(venv)
    _ok(lab.uv(alice, "sync", "--locked", cwd=root))
    _ok(lab.uv(alice, "run", "python", "-c", "import wsroot, member, alpha", cwd=root))
    assert _entries(venv) == before

    # in the member's directory, uv sync takes the member alone (into the workspace's venv): so does wheelstore
    reference = workdir / "ref"
    _ok(lab.uv(alice, "sync", "--locked", cwd=member, env={"UV_PROJECT_ENVIRONMENT": str(reference)}))
    _ok(lab.ws(alice, group_store, "sync", cwd=member))
    assert not (member / ".venv").exists()
    assert _installed(venv) == _installed(reference) == {"member": "0.1", "gamma": "1.0"}
    before = _entries(venv)
    _ok(lab.uv(alice, "run", "python", "-c", "import member, gamma", cwd=member))
    _ok(lab.uv(alice, "sync", "--locked", cwd=member))
    assert _entries(venv) == before


def test_a_stale_lock_is_refused_and_a_touched_pyproject_is_not(lab: Lab, users: Users, group_store: Path,
                                                               workdir: Path) -> None:
    alice = users.alice
    proj = lab.project("alice", workdir, alice)
    venv, pyproject, lock = proj / ".venv", proj / "pyproject.toml", proj / "uv.lock"
    _ok(lab.ws(alice, group_store, "sync", "--project", str(proj)))
    text = pyproject.read_text()
    pyproject.write_text(text.replace('dependencies = ["alpha"]', 'dependencies = ["alpha", "gamma"]'))
    assert pyproject.stat().st_mtime_ns > lock.stat().st_mtime_ns
    venv_before, store_before = _entries(venv), published(group_store)
    for cwd, args in ((Path("/"), ("--project", str(proj))), (proj, ())):
        line = _error(lab.ws(alice, group_store, "sync", *args, cwd=cwd))
        assert str(lock) in line and "'uv lock'" in line, line
        assert _entries(venv) == venv_before and published(group_store) == store_before
    assert "gamma" not in _installed(venv)
    assert lab.uv(alice, "sync", "--locked", cwd=proj).returncode != 0  # uv's own verdict is the same

    pyproject.write_text(text)  # the same content again, newer than the lock: accepted, as uv accepts it
    os.utime(pyproject, ns=(lock.stat().st_mtime_ns + 10**9,) * 2)
    _ok(lab.ws(alice, group_store, "sync", "--project", str(proj)))
    after = _entries(venv)  # the project's editable install is made again, as uv sync does for a newer pyproject.toml

    def linked(entries: dict[str, Entry]) -> dict[str, Entry]:
        return {k: v for k, v in entries.items() if "myproj" not in k and not k.endswith("site-packages")}

    assert linked(after) == linked(venv_before) and published(group_store) == store_before
    _ok(lab.uv(alice, "sync", "--locked", cwd=proj))
    assert _entries(venv) == after


def _trees(venv: Path, store: Path) -> dict[str, str]:
    """{name: key} of every distribution of ``venv`` whose files resolve into ``store``'s trees."""
    (site,) = venv.glob("lib/python3*/site-packages")
    trees = (store / "trees").resolve()
    found: dict[str, str] = {}
    for entry in site.iterdir():
        for path in [entry, *(entry.rglob("*") if entry.is_dir() and not entry.is_symlink() else ())]:
            real = Path(os.path.realpath(path))
            if real.is_relative_to(trees):
                name = canonicalize_name(entry.name.split("-")[0].removesuffix(".pth"))
                key = real.relative_to(trees).parts[0].split("-")[0]  # a bytecode unit's: its tree's
                assert found.setdefault(name, key) == key, (name, key, found)
    return found


def test_a_second_users_overlapping_lock_links_the_same_trees(lab: Lab, users: Users, group_store: Path,
                                                             workdir: Path) -> None:
    mine, his = lab.project("alice", workdir, users.alice), lab.project("bob", workdir, users.bob)
    _ok(lab.ws(users.alice, group_store, "sync", "--project", str(mine)))
    alices = _trees(mine / ".venv", group_store)
    assert {"alpha", "beta", "devtool"} <= alices.keys() and "myproj" not in alices
    trees = group_store / "trees"
    before = {name: (st.st_ino, st.st_ctime_ns) for name in os.listdir(trees) if (st := (trees / name).lstat())}

    done = _ok(lab.ws(users.bob, group_store, "sync", "--project", str(his)))
    assert "+ delta==1.0" in done.stdout and "+ bobproj==0.1" in done.stdout, done.stdout
    bobs = _trees(his / ".venv", group_store)
    assert bobs.keys() == {"alpha", "beta", "delta"}
    assert bobs["alpha"] == alices["alpha"] and bobs["beta"] == alices["beta"]
    after = {name: (st.st_ino, st.st_ctime_ns) for name in os.listdir(trees) if (st := (trees / name).lstat())}
    assert {name: after[name] for name in before} == before  # alpha's and beta's trees untouched
    new = after.keys() - before.keys()
    assert bobs["delta"] in new and all(name.startswith(bobs["delta"]) for name in new), new
    assert _value(lab, users.bob, his / ".venv", "bobproj") == "1"


def test_refusals_are_one_line(lab: Lab, users: Users, group_store: Path, workdir: Path) -> None:
    alice = users.alice
    proj = lab.project("alice", workdir, alice)
    venv = _own(workdir / "venv", alice)
    wheel = next((lab.templates.parent / "wheels").glob("gamma-*.whl"))
    for args in (("--extra", "plot", str(wheel)), ("--no-dev", "-r", str(proj / "pyproject.toml")),
                 ("--project", str(proj), str(wheel)), ("--all-groups", "-e", str(proj))):
        line = _error(lab.ws(alice, group_store, "sync", "--venv", str(venv), *args, cwd=proj))
        assert "apply to a project's lock" in line and "fix: drop them" in line, line
    assert list(venv.iterdir()) == [] and not (proj / ".venv").exists()

    nothing = _own(workdir / "empty" / "sub", alice)  # no uv.lock, no pylock.toml here or above
    for cwd, given in ((nothing, ()), (Path("/"), ("--project", str(nothing)))):
        line = _error(lab.ws(alice, group_store, "sync", *given, cwd=cwd))
        assert f"neither {nothing} nor any parent has a uv.lock or a pylock.toml" in line, line
        assert "uv lock" in line and "-r requirements.txt" in line, line
    assert not (nothing / ".venv").exists()

    pylock = _own(workdir / "pylocked", alice)  # a PEP 751 lock without extras, groups or packages
    (pylock / "pylock.toml").write_text('lock-version = "1.0"\ncreated-by = "hand"\npackages = []\n')
    line = _error(lab.ws(alice, group_store, "sync", "--extra", "plot", cwd=pylock))
    assert "--extra plot" in line and "has no such extra (it has: none)" in line, line
    line = _error(lab.ws(alice, group_store, "sync", "--only-group", "docs", cwd=pylock))
    assert "--only-group" in line and "select from a uv.lock" in line, line
    assert not (pylock / ".venv").exists()


def _other_python() -> Path | None:
    """A CPython 3.10+ of another minor version than the system's, if this machine has one (as root may run it)."""
    system = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[1])"], capture_output=True,
                            text=True, check=True).stdout.strip()
    found = [*glob.glob("/usr/local/bin/python3.1*"), *glob.glob("/root/.pyenv/versions/3.1*/bin/python3")]
    for python in map(Path, sorted(found)):
        minor = subprocess.run([python, "-c", "import sys; print(sys.version_info[1])"], capture_output=True,
                               text=True).stdout.strip()
        if minor and minor != system:
            return python
    return None


def test_a_venv_whose_python_uv_would_replace_is_refused(lab: Lab, run: Runner, workdir: Path) -> None:
    """``.python-version`` names a Python the venv does not have: ``uv run`` would make the venv again. Run by root,
    whose interpreters are the only second Python here (test users cannot read /root)."""
    other = _other_python()
    if other is None:
        pytest.skip("no second Python here")
    minor = subprocess.run([other, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                           text=True, check=True).stdout.strip()
    proj = lab.project("alice", workdir, "root")
    (proj / ".python-version").write_text(minor + "\n")
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(proj / ".venv")], check=True)
    store = workdir / "rootstore"  # root's own
    _ok(run(None, "init", str(store)))
    path = {"PATH": f"{run.tool.parent}:{other.parent}:/usr/bin:/bin"}

    before = _entries(proj / ".venv")
    line = _error(lab.ws(None, store, "sync", cwd=proj, env=path))
    assert f"not {proj / '.venv'}'s Python" in line and f"remove {proj / '.venv'}" in line, line
    assert _entries(proj / ".venv") == before
    uv = _ok(lab.uv(None, "run", "python", "-c", "import sys; print(sys.version)", cwd=proj, env=path))
    assert uv.stdout.startswith(minor) and _entries(proj / ".venv") != before  # uv made it again: the refusal's why

    shutil.rmtree(proj / ".venv")  # made by wheelstore, with uv's choice: kept by uv
    done = _ok(lab.ws(None, store, "sync", cwd=proj, env=path))
    assert f"created venv at {proj / '.venv'} (Python {minor}." in done.stderr, done.stderr
    before = _entries(proj / ".venv")
    _ok(lab.uv(None, "sync", "--locked", cwd=proj, env=path))
    assert _entries(proj / ".venv") == before


def _pylock_entry(wheel: Path, marker: str | None = None) -> str:
    name, version = wheel.name.split("-")[:2]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    when = f'marker = "{marker}"\n' if marker else ""
    return (f'[[packages]]\nname = "{name}"\nversion = "{version}"\n{when}'
            f'wheels = [{{ path = "{wheel}", hashes = {{ sha256 = "{digest}" }} }}]\n\n')


def test_a_pylock_selects_its_extras_and_groups_as_pep_751_says(lab: Lab, users: Users, group_store: Path,
                                                               workdir: Path, base_dir: Path) -> None:
    """A project's pylock.toml whose extras and groups are markers (as pdm writes them): uv sync's options select
    from it through packaging's PEP 751 selection, the default groups unless told."""
    alice = users.alice
    wheels = base_dir / "uvproject" / "wheels"
    proj = _own(workdir / "pep751", alice)
    (proj / "pylock.toml").write_text(
        'lock-version = "1.0"\ncreated-by = "hand"\nextras = ["plot"]\ndependency-groups = ["dev", "docs"]\n'
        'default-groups = ["dev"]\n\n' + _pylock_entry(wheels / "alpha-1.0-py3-none-any.whl")
        + _pylock_entry(wheels / "beta-2.0-py3-none-any.whl")
        + _pylock_entry(wheels / "gamma-1.0-py3-none-any.whl", "'plot' in extras")
        + _pylock_entry(wheels / "devtool-1.0-py3-none-any.whl", "'dev' in dependency_groups")
        + _pylock_entry(wheels / "docsy-1.0-py3-none-any.whl", "'docs' in dependency_groups"))
    venv = proj / ".venv"
    for options, expected in (((), {"alpha", "beta", "devtool"}),
                              (("--extra", "plot", "--no-dev", "--group", "docs"), {"alpha", "beta", "gamma", "docsy"}),
                              (("--all-groups", "--all-extras"), {"alpha", "beta", "gamma", "devtool", "docsy"}),
                              (("--no-default-groups",), {"alpha", "beta"})):
        _ok(lab.ws(alice, group_store, "sync", *options, cwd=proj))
        assert set(_installed(venv)) == expected, options
    _ok(lab.ws(alice, group_store, "sync", str(proj / "pylock.toml"), "--venv", str(venv), "--group", "docs",
               cwd=Path("/")))  # a pylock given by name selects the same way
    assert set(_installed(venv)) == {"alpha", "beta", "devtool", "docsy"}
    before = _entries(venv)
    line = _error(lab.ws(alice, group_store, "sync", "--group", "nope", cwd=proj))
    assert "--group nope" in line and "has no such group (it has: dev, docs)" in line, line
    assert _entries(venv) == before
