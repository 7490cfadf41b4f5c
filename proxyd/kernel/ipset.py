"""The daemon's one ipset writer: diff the desired sets against one `ipset save`,
apply the difference with one `ipset restore`.

Callers hand in the whole desired state as ``IPSet`` values each sync
(proxyd/kernel/state.py, which keeps entries in the forms measured below),
together with an ``owned(name)`` predicate; sets it rejects are never read,
changed or destroyed.

A set whose entries changed is rebuilt under a temporary name and swapped in
(``swap TMP NAME``): iptables rules that reference NAME keep matching (swap
exchanges the contents, a rule holds the set's index) and never see a half
filled set. The temporary name is ``temp_name(name)``: the name cut to 27
characters plus ``-tmp``. Replacing the tail keeps the caller's prefix, so a
prefix-based ``owned`` accepts it; ``sync_sets`` insists that it does, and
desired names may not end in ``-tmp``. Owned sets ending in ``-tmp`` are
leftovers of an interrupted sync and are destroyed first.

Measured with ipset 7.17 on Linux 6.1:
- ``ipset save`` prints a /32 (IPv4) or /128 (IPv6) entry of a hash:net set as
  the bare address (``add S 10.0.0.1``), IPv6 compressed (``fd00::1``); a
  network with host bits set is stored masked (10.0.0.1/24 -> 10.0.0.0/24).
- A hash:ip set expands a CIDR into every address of it, so only single
  addresses are accepted there (anything else would never converge).
- hash:ip,port prints ``ADDR,PROTO:PORT``; ``10.0.0.1,80`` is saved as
  ``10.0.0.1,tcp:80`` and service names come back as numbers.
- hash:net cannot hold a /0: "The value of the CIDR parameter of the IP address
  is invalid". Callers split 0.0.0.0/0 into 0.0.0.0/1 and 128.0.0.0/1.
- ``swap`` refuses sets of different type or family ("their type does not
  match") but accepts different hashsize/maxelem; a set referenced by an
  iptables rule cannot be destroyed ("it is in use by a kernel component").
- ``ipset restore`` is not a transaction: it stops at the first refused line
  ("Error in line N: ...") and the lines before it stay applied. The next
  sync starts from a fresh ``ipset save`` and converges.
- Names longer than 31 characters are refused.
- The kernel grows hashsize by itself (1024 -> 8192 for 20,000 /24s).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from lowlevel.xtables import RestoreError, run_command
from proxyd.kernel.state import FAMILIES, KINDS, MAX_NAME_LEN, IPSet

TEMP_SUFFIX = "-tmp"
MIN_MAXELEM = 65536
MIN_HASHSIZE = 1024
IN_USE = "in use by a kernel component"

log = logging.getLogger(__name__)


def temp_name(name: str) -> str:
    """The name ``name`` is rebuilt under before being swapped in."""
    return name[:MAX_NAME_LEN - len(TEMP_SUFFIX)] + TEMP_SUFFIX


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def sizing(count: int) -> tuple[int, int]:
    """(hashsize, maxelem) for a set of ``count`` entries: about four entries a
    bucket (what the kernel grows to by itself), never below the defaults."""
    return (max(MIN_HASHSIZE, _next_pow2(-(-count // 4))),
            max(MIN_MAXELEM, _next_pow2(count)))


@dataclass
class SavedSet:
    """An owned set as `ipset save` showed it (entries as printed)."""
    name: str
    kind: str
    family: str
    entries: set[str] = field(default_factory=set)


def parse_save(text: str, owned: Callable[[str], bool]) -> dict[str, SavedSet]:
    """The owned sets of ``ipset save`` output; every other line is skipped unread."""
    sets: dict[str, SavedSet] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] not in ("create", "add") or not owned(words[1]):
            continue
        if words[0] == "create":
            opts = words[3:]
            family = opts[opts.index("family") + 1] if "family" in opts[:-1] else ""
            sets[words[1]] = SavedSet(words[1], words[2], family)
        elif words[1] in sets:
            sets[words[1]].entries.add(words[2])
    return sets


def _same_entries(have: SavedSet, want: IPSet) -> bool:
    """The kernel prints entries in canonical form, so the text usually matches
    as it is; parse it only when it does not (parsing costs ~10 us an entry)."""
    if have.entries == want.entries:
        return True
    canonical, version = KINDS[want.kind], FAMILIES[want.family]
    seen = set()
    for entry in have.entries:
        try:
            seen.add(canonical(entry, version)[1])
        except ValueError:
            return False   # not ours to read: rewrite the set
    return seen == want.entries


def _fill(s: IPSet, name: str) -> list[str]:
    hashsize, maxelem = sizing(len(s.entries))
    return ([f"create {name} {s.kind} family {s.family} hashsize {hashsize} maxelem {maxelem}"]
            + [f"add {name} {entry}" for entry in s.sorted_entries()])


def build_restore(desired: Iterable[IPSet], saved: dict[str, SavedSet]) -> list[str]:
    """The restore lines that turn ``saved`` (owned sets only) into ``desired``.

    Leftover temporary sets go first. A set of another kind or family cannot be
    swapped: it is destroyed and recreated last, so that if the kernel refuses
    (the set is still referenced) every other set has already converged.
    """
    lines = [f"destroy {name}" for name in sorted(saved) if name.endswith(TEMP_SUFFIX)]
    recreate: list[str] = []
    for s in sorted(desired, key=lambda s: s.name):
        have = saved.get(s.name)
        if have is None:
            lines += _fill(s, s.name)
        elif (have.kind, have.family) != (s.kind, s.family):
            recreate += [f"destroy {s.name}", *_fill(s, s.name)]
        elif not _same_entries(have, s):
            tmp = temp_name(s.name)
            lines += [*_fill(s, tmp), f"swap {tmp} {s.name}", f"destroy {tmp}"]
    return lines + recreate


class IPSetError(Exception):
    """`ipset` failed; for a restore, names the failing line with context."""

    def __init__(self, message: str, line_no: int = 0, line: str = "", stderr: str = ""):
        super().__init__(message)
        self.line_no, self.line, self.stderr = line_no, line, stderr

    @classmethod
    def from_restore(cls, text: str, stderr: str, hint: str = "") -> IPSetError:
        failed = RestoreError("ipset restore", text, stderr)
        message = failed.describe() + (f"\n{hint}" if hint else "")
        return cls(message, failed.line_no, failed.line, failed.stderr)


def build_changes(changed: Iterable[IPSet], applied: Mapping[str, IPSet]) -> list[str]:
    """Restore lines (for ``ipset restore -exist``) that turn the ``applied`` sets into the
    ``changed`` ones: a new set is created filled, an existing one gets ``add``/``del``
    lines for the entries that differ (a rule matching it never sees it half replaced:
    each line is atomic), one of another kind or family is destroyed and recreated."""
    lines: list[str] = []
    for s in sorted(changed, key=lambda s: s.name):
        have = applied.get(s.name)
        if have is None:
            lines += _fill(s, s.name)
        elif (have.kind, have.family) != (s.kind, s.family):
            lines += [f"destroy {s.name}", *_fill(s, s.name)]
        elif have.entries != s.entries:
            lines += [f"del {s.name} {entry}" for entry in sorted(have.entries - s.entries)]
            lines += [f"add {s.name} {entry}" for entry in sorted(s.entries - have.entries)]
    return lines


class IPSetApplier:
    """Keeps the owned ipsets of the calling thread's network namespace as desired.

    ``sync_sets`` reads every set and repairs them (the start, the periodic resync,
    the retry after an error); ``apply_changes`` trusts what the last write left and
    writes only the entries that differ, without reading.
    """

    def __init__(self, owned: Callable[[str], bool], run=run_command):
        self._owned = owned
        self._run = run
        self._lock = threading.Lock()
        # Our sets as the kernel holds them after the last write; None until a reading
        # sync, and again after any failure.
        self._applied: dict[str, IPSet] | None = None

    def sync_sets(self, desired: Iterable[IPSet]) -> int:
        """Create missing sets, rewrite sets whose entries differ; one `ipset restore`.
        Returns the number of restore lines written (0 = the kernel already
        matched: nothing executed but one `ipset save`)."""
        desired = list(desired)
        self._check_desired(desired)
        with self._lock:
            self._applied = None
            saved = parse_save(self._ipset(["save"]), self._owned)
            lines = build_restore(desired, saved)
            if lines:
                self._restore(lines, saved, desired)
            self._applied = {s.name: s for s in desired}
        return len(lines)

    @property
    def has_applied(self) -> bool:
        return self._applied is not None

    def apply_changes(self, changed: Iterable[IPSet]) -> int:
        """Create or update only the ``changed`` sets, in one ``ipset restore -exist``
        (an entry already there or already gone is no error), without reading. Returns
        the lines written. Needs a successful ``sync_sets`` first; a failure forgets
        what was applied, so the next write must be a reading ``sync_sets``."""
        changed = list(changed)
        self._check_desired(changed)
        with self._lock:
            if self._applied is None:
                raise RuntimeError("ipset: nothing applied yet to change; sync_sets() first")
            lines = build_changes(changed, self._applied)
            if not lines:
                return 0
            applied, self._applied = self._applied, None
            text = "\n".join(lines) + "\n"
            proc = self._run(["ipset", "restore", "-exist"], text)
            if proc.returncode != 0:
                raise IPSetError.from_restore(text, proc.stderr or proc.stdout)
            applied.update((s.name, s) for s in changed)
            self._applied = applied
        return len(lines)

    def destroy(self, names: Iterable[str]) -> list[str]:
        """Destroy these owned sets (call AFTER iptables stopped referencing them),
        without listing the kernel's; one still in use is logged and left for the
        next resync. Returns the names destroyed."""
        names = sorted(n for n in set(names) if self._owned(n))
        with self._lock:
            destroyed = self._destroy(names)
            if self._applied is not None:
                for name in names:
                    self._applied.pop(name, None)
        return destroyed

    def cleanup_stale(self, desired_names: Iterable[str]) -> list[str]:
        """Destroy owned sets not in ``desired_names`` (call AFTER iptables stopped
        referencing them). A set the kernel refuses to destroy because it is still
        in use is logged and left for the next sync; returns the names destroyed."""
        keep = set(desired_names)
        with self._lock:
            return self._destroy(self._stale(keep))

    def _destroy(self, names: list[str]) -> list[str]:
        """One restore of destroy lines; a set the kernel refuses (in use) is skipped and
        the ones after it are tried again. Returns the names destroyed, sorted."""
        destroyed: list[str] = []
        while names:
            text = "".join(f"destroy {name}\n" for name in names)
            proc = self._run(["ipset", "restore"], text)
            if proc.returncode == 0:
                destroyed += names
                break
            error = IPSetError.from_restore(text, proc.stderr or proc.stdout)
            if IN_USE not in error.stderr or not 0 < error.line_no <= len(names):
                raise error
            log.warning("ipset %s is still referenced; destroying it next sync",
                        names[error.line_no - 1])
            # The lines before the refused one were applied, the rest were not.
            destroyed += names[:error.line_no - 1]
            names = names[error.line_no:]
        return sorted(destroyed)

    def _check_desired(self, desired: list[IPSet]) -> None:
        names = [s.name for s in desired]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"ipsets wanted twice: {twice}")
        for name in names:
            if name.endswith(TEMP_SUFFIX):
                raise ValueError(f"ipset {name}: names ending in {TEMP_SUFFIX!r} are the "
                                 "applier's temporary sets")
            if not (self._owned(name) and self._owned(temp_name(name))):
                raise ValueError(f"ipset {name}: owned() must accept it and its temporary "
                                 f"name {temp_name(name)}, or it could never be cleaned up")

    def _stale(self, keep: set[str]) -> list[str]:
        names = self._ipset(["list", "-n"]).split()
        return sorted(n for n in names if self._owned(n) and n not in keep)

    def _ipset(self, args: list[str]) -> str:
        proc = self._run(["ipset", *args], None)
        if proc.returncode != 0:
            raise IPSetError(f"ipset {' '.join(args)} failed ({proc.returncode}): "
                             f"{proc.stderr.strip()}", stderr=proc.stderr.strip())
        return proc.stdout

    def _restore(self, lines: list[str], saved: dict[str, SavedSet], desired: list[IPSet]) -> None:
        text = "\n".join(lines) + "\n"
        proc = self._run(["ipset", "restore"], text)
        if proc.returncode == 0:
            return
        failed = IPSetError.from_restore(text, proc.stderr or proc.stdout)
        name = failed.line.split()[1] if failed.line.startswith("destroy ") else ""
        wanted = next((s for s in desired if s.name == name), None)
        if wanted is None or name not in saved:
            raise failed
        have = saved[name]
        raise IPSetError.from_restore(
            text, proc.stderr or proc.stdout,
            f"ipset {name} exists as {have.kind} family {have.family} but is wanted as "
            f"{wanted.kind} family {wanted.family}; sets of different types cannot be "
            "swapped, and a referenced set cannot be destroyed: stop referencing it, "
            "or give the new kind a new name")
