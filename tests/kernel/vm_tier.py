"""The kernel tier inside the Debian-kernel VM: one boot, one report per test.

When the running kernel lacks IPVS, dummy or ipip, each kernel-tier item is
replaced by a ``GuestItem`` with the same node id. The first one to run boots
the VM once (``tests/vm/run``) and runs every collected kernel-tier test
there; each item then reports the guest's outcome for its own node id, read
from the guest's JUnit XML report.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "vm" / "run"
CACHE = ROOT / ".vm"
LOG = CACHE / "kernel-tier.log"
RUNNER_MISSING = 127
TAIL_LINES = 60


def ci_strict() -> bool:
    """In CI a kernel-tier test that would be skipped fails instead."""
    return os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> None:
    if ci_strict():
        pytest.fail(f"{reason} (CI=true: a kernel-tier test may not be skipped)", pytrace=False)
    pytest.skip(reason)


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # "passed", "failed", "skipped" or "unavailable" (the VM cannot start)
    text: str = ""


def junit_address(nodeid: str) -> tuple[str, str]:
    """The (classname, name) pytest's JUnit report gives a node id."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def parse_junit(xml_text: str) -> dict[tuple[str, str], Outcome]:
    outcomes: dict[tuple[str, str], Outcome] = {}
    for case in ET.fromstring(xml_text).iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        problems = [el for el in case if el.tag in ("failure", "error")]
        skipped = case.find("skipped")
        if problems:
            text = "\n".join(f"{el.get('message', '')}\n{el.text or ''}".strip()
                             for el in problems)
            outcomes[key] = Outcome("failed", text)
        elif skipped is not None:
            outcomes[key] = Outcome("skipped", skipped.get("message") or skipped.text or "")
        else:
            outcomes[key] = Outcome("passed")
    return outcomes


def log_tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def runner_message(output: str) -> str:
    """The runner's own account of a failed boot (from its last "VM: " line), or the log's tail."""
    at = output.rfind("\nVM: ")
    if at < 0:
        return log_tail(output)
    return log_tail(output[at + 1:])


class GuestRun:
    """One boot of the VM running the given node ids; started on first use."""

    def __init__(self, rootdir: pathlib.Path, nodeids: list[str], missing: tuple[str, ...]):
        self.rootdir = rootdir
        self.missing = missing
        self.nodeids = nodeids
        self.timeout = float(os.environ.get("KRT_VM_TIMEOUT", "1500"))
        self.outcomes: dict[tuple[str, str], Outcome] | None = None
        self.unavailable: str | None = None  # the VM cannot start here: skip (or fail in CI)
        self.broken: str | None = None       # the VM started but gave no usable report
        self.exit_status: int | None = None
        self.timing = ""
        self.wall = 0.0

    @property
    def started(self) -> bool:
        return self.outcomes is not None or self.unavailable or self.broken

    def python(self) -> str:
        venv = self.rootdir / ".venv" / "bin" / "python"
        return str(venv) if venv.exists() else sys.executable

    def guest_argv(self, junit: pathlib.Path) -> list[str]:
        return [str(RUNNER), "-v", "--timeout", f"{self.timeout:g}", "--",
                "env", "PYTHONDONTWRITEBYTECODE=1", f"CI={os.environ.get('CI', '')}",
                self.python(), "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rA",
                f"--junitxml={junit}", *self.nodeids]

    def ensure_ran(self) -> None:
        if self.started:
            return
        CACHE.mkdir(exist_ok=True)
        check = subprocess.run([str(RUNNER), "--check"], cwd=self.rootdir,
                               capture_output=True, text=True)
        if check.returncode == RUNNER_MISSING:
            self.unavailable = (f"this kernel lacks {', '.join(self.missing)} and the VM "
                                f"cannot start: {check.stderr.strip()}")
            return
        if check.returncode != 0:
            self.broken = f"tests/vm/run --check failed ({check.returncode}):\n{check.stderr}"
            return
        self._boot()

    def _boot(self) -> None:
        junit = CACHE / f"kernel-tier-{os.getpid()}.xml"
        junit.unlink(missing_ok=True)
        t0 = time.monotonic()
        with open(LOG, "w") as log:
            try:
                proc = subprocess.run(self.guest_argv(junit), cwd=self.rootdir,
                                      stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=self.timeout + 120)
                self.exit_status = proc.returncode
            except subprocess.TimeoutExpired:
                self.exit_status = None  # the runner enforces --timeout itself; it hung
        self.wall = time.monotonic() - t0
        output = LOG.read_text(errors="replace")
        found = re.findall(r"^VM: booted in .*$", output, re.M)
        self.timing = found[-1].removeprefix("VM: ") if found else ""
        try:
            self.outcomes = parse_junit(junit.read_text())
        except (OSError, ET.ParseError):
            self.broken = (f"the VM gave no test report (tests/vm/run exited {self.exit_status}; "
                           f"the guest's output is in {LOG}):\n{runner_message(output)}")
        finally:
            junit.unlink(missing_ok=True)

    def outcome(self, nodeid: str) -> Outcome:
        self.ensure_ran()
        if self.unavailable:
            return Outcome("unavailable", self.unavailable)
        if self.broken:
            return Outcome("failed", self.broken)
        found = self.outcomes.get(junit_address(nodeid))
        if found is None:
            return Outcome("failed", f"{nodeid} is missing from the VM's report (tests/vm/run "
                                     f"exited {self.exit_status}); last lines of {LOG}:\n"
                                     f"{log_tail(LOG.read_text(errors='replace'))}")
        return found

    def unexplained_exit(self) -> bool:
        """The guest's pytest failed although no test did (e.g. leaked namespaces there)."""
        return bool(self.outcomes) and self.exit_status not in (0, None) and all(
            o.status != "failed" for o in self.outcomes.values())


class GuestItem(pytest.Item):
    """Stands in for a kernel-tier test and reports its outcome inside the VM."""

    def __init__(self, *, original: pytest.Item, guest: GuestRun, **kw):
        super().__init__(**kw)
        self.original = original
        self.guest = guest
        self.own_markers.extend(original.own_markers)
        self.keywords.update(original.keywords)
        # The first item waits for the whole tier's boot.
        self.add_marker(pytest.mark.timeout(guest.timeout + 180))

    @classmethod
    def replacing(cls, item: pytest.Item, guest: GuestRun) -> "GuestItem":
        return cls.from_parent(item.parent, name=item.name, original=item, guest=guest)

    def runtest(self) -> None:
        outcome = self.guest.outcome(self.nodeid)
        if outcome.status == "failed":
            pytest.fail(f"failed in the VM:\n{outcome.text}", pytrace=False)
        if outcome.status == "skipped":
            skip_or_fail(f"skipped in the VM: {outcome.text}")
        if outcome.status == "unavailable":
            skip_or_fail(outcome.text)

    def reportinfo(self):
        return self.original.reportinfo()
