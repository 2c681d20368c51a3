"""What doctor found: each check's finding, and the report of them all for people (``lines``), for ``--json`` and as
the CLI's one-line error."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..base.errors import SharingBroken

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One finding: ``fix`` is the exact command that fixes it, or None when there is none to give."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def __post_init__(self) -> None:  # one line, whatever a path or an OS message held
        object.__setattr__(self, "detail", " ".join(self.detail.split()))

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass
class DoctorReport:
    """Every check doctor ran, in order; sharing works when none failed (warnings do not count)."""

    store: Path | None
    selected_by: str | None
    venv: Path | None
    user: str
    checks: list[Check] = field(default_factory=list)
    #: the mode ``--link-mode auto`` picks here, when the probe could run
    auto_link_mode: str | None = None

    def __iter__(self) -> Iterator[Check]:
        return iter(self.checks)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_json(self) -> dict[str, object]:
        return {
            "store": str(self.store) if self.store else None,
            "selected_by": self.selected_by,
            "venv": str(self.venv) if self.venv else None,
            "user": self.user,
            "ok": self.ok,
            "auto_link_mode": self.auto_link_mode,
            "checks": [c.to_json() for c in self.checks],
        }

    def lines(self) -> list[str]:
        """The report for people: one line per check, its fix indented below it."""
        width = max((len(c.name) for c in self.checks), default=0)
        out = [f"wheelstore doctor for {self.user}: store {self.store or '-'} (selected by {self.selected_by or '-'})"
               + (f", venv {self.venv}" if self.venv else "")]
        for c in self.checks:
            out.append(f"{c.status:4}  {c.name:{width}}  {c.detail}")
            if c.fix and c.status != "ok":
                out.append(f"{'':4}  {'':{width}}  fix: {c.fix}")
        warnings = sum(c.status == "warn" for c in self.checks)
        failures = sum(c.status == "fail" for c in self.checks)
        if failures:
            out.append(f"sharing cannot work for {self.user} here: {failures} problem(s), {warnings} warning(s)")
        else:
            out.append(f"sharing works for {self.user} here ({warnings} warning(s))")
        return out

    def error(self) -> SharingBroken | None:
        """The first failure (preferring one with a fix) as a one-line error for the CLI, or None if sharing works."""
        failures = [c for c in self.checks if c.status == "fail"]
        if not failures:
            return None
        first = next((c for c in failures if c.fix), failures[0])
        return SharingBroken(f"sharing cannot work for {self.user} here: {first.detail}", hint=first.fix)
