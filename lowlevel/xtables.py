"""iptables-save / iptables-restore --noflush, one transaction at a time (CNI plugins and daemon).

The command runner is injected so unit tests can hand in a stateful fake that
parses our own restore text. Saved tables are parsed into plain data
(``SavedTable``) for callers to diff against what they want.

Restore-file quirks worth knowing:
- ``:CHAIN`` in a restore file creates the chain and FLUSHES it, even with
  --noflush; only chains that are ours to rewrite may be declared that way.
  Shared chains are created with ``-N`` (which fails if the chain exists).
- ``-D`` of a rule that does not exist fails the whole transaction, so deletes
  are only written for rules just seen in iptables-save, in its exact text.
"""
from __future__ import annotations

import fcntl
import os

# Serialises read-modify-write (save, then restore) between our own plugin
# processes: without it two ADDs both see a shared chain missing, both write
# "-N", and the second transaction fails.
LOCK_PATH = "/run/kube-router-cni-iptables.lock"

_BINARIES = {4: ("iptables-save", "iptables-restore"),
             6: ("ip6tables-save", "ip6tables-restore")}


class Completed:
    """What a command left behind: exit status, stdout and stderr as text."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str):
        self.args, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr


def run_command(argv: list[str], input: str | None = None, timeout: float = 60) -> Completed:
    """Run a command; a missing binary comes back as exit status 127.

    This is the ``run(argv, input)`` every user of this module takes injected:
    anything returning an object with returncode, stdout and stderr will do.
    posix_spawn and poll rather than subprocess: subprocess (with locale, re,
    signal, threading) costs ~8 ms of start-up on every pod ADD and DEL.
    """
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    r_in, w_in = os.pipe() if input is not None else (-1, -1)
    actions = [(os.POSIX_SPAWN_DUP2, w_out, 1), (os.POSIX_SPAWN_DUP2, w_err, 2),
               (os.POSIX_SPAWN_DUP2, r_in, 0) if input is not None
               else (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    try:
        # Python ignores SIGPIPE and a spawned child would inherit that; 13 is
        # SIGPIPE on Linux (the signal module costs start-up time: enum).
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions,
                              setsigdef=(13,))
    except OSError as exc:
        for fd in (r_out, w_out, r_err, w_err, r_in, w_in):
            if fd >= 0:
                os.close(fd)
        return Completed(argv, 127 if isinstance(exc, FileNotFoundError) else 126, "", str(exc))
    for fd in (w_out, w_err, r_in):
        if fd >= 0:
            os.close(fd)
    out = _pump(pid, (r_out, r_err), w_in, (input or "").encode(), timeout)
    _, status = os.waitpid(pid, 0)
    return Completed(argv, os.waitstatus_to_exitcode(status),
                     b"".join(out[r_out]).decode(errors="replace"),
                     b"".join(out[r_err]).decode(errors="replace"))


def _pump(pid: int, readers: tuple[int, ...], writer: int, data: bytes,
          timeout: float) -> dict[int, list[bytes]]:
    """Feed ``data`` to ``writer`` and collect ``readers`` until all close (the child
    is killed at ``timeout``); every descriptor is closed on return."""
    import select
    import time
    out: dict[int, list[bytes]] = {fd: [] for fd in readers}
    pending, poller, fds = memoryview(data), select.poll(), set(readers)
    for fd in readers:
        poller.register(fd, select.POLLIN)
    if writer >= 0:
        os.set_blocking(writer, False)
        poller.register(writer, select.POLLOUT)
        fds.add(writer)
    deadline = time.monotonic() + timeout
    while fds:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, 9)
            break
        for fd, _ in poller.poll(left * 1000):
            if fd == writer:
                try:
                    pending = pending[os.write(fd, pending[:65536]):]
                except BrokenPipeError:
                    pending = pending[:0]
                done = not pending
            else:
                chunk = os.read(fd, 65536)
                out[fd].append(chunk)
                done = not chunk
            if done:
                poller.unregister(fd)
                os.close(fd)
                fds.discard(fd)
    for fd in fds:
        os.close(fd)
    return out


class IptablesError(Exception):
    pass


class RestoreError(IptablesError):
    """iptables-restore refused a transaction; names the failing line with context."""

    def __init__(self, binary: str, text: str, stderr: str):
        import re   # only on failure: re costs start-up time on every call
        self.binary, self.text, self.stderr = binary, text, stderr.strip()
        match = re.search(r"line:? (\d+)", stderr)
        self.line_no = int(match.group(1)) if match else 0
        lines = text.splitlines()
        self.line = lines[self.line_no - 1] if 0 < self.line_no <= len(lines) else ""
        super().__init__(self.describe())

    def context(self, around: int = 2) -> str:
        lines = self.text.splitlines()
        if not self.line_no:
            return "\n".join(f"{i:4d}  {line}" for i, line in enumerate(lines, 1))
        lo, hi = max(1, self.line_no - around), min(len(lines), self.line_no + around)
        return "\n".join(f"{'>' if i == self.line_no else ' '}{i:3d}  {lines[i - 1]}"
                         for i in range(lo, hi + 1))

    def describe(self) -> str:
        where = f"line {self.line_no}: {self.line}" if self.line_no else "unknown line"
        return f"{self.binary} failed at {where}\n{self.stderr}\n{self.context()}"


class SavedTable:
    """One table of iptables-save output: chains in order, each with its rules.

    A rule is the text after ``-A CHAIN `` exactly as iptables-save printed it.
    """

    def __init__(self, name: str, chains: dict[str, list[str]] | None = None):
        self.name = name
        self.chains = {} if chains is None else chains

    def __repr__(self) -> str:
        return f"SavedTable({self.name!r}, {self.chains!r})"

    def has_chain(self, chain: str) -> bool:
        return chain in self.chains

    def rules(self, chain: str) -> list[str]:
        return self.chains.get(chain, [])

    def jumps_to(self, target: str) -> list[tuple[str, str]]:
        """Every (chain, rule) whose target is ``target``."""
        return [(chain, rule) for chain, rules in self.chains.items() for rule in rules
                if rule_target(rule) == target]


def parse_save(text: str) -> dict[str, SavedTable]:
    tables: dict[str, SavedTable] = {}
    table = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = tables.setdefault(line[1:], SavedTable(line[1:]))
        elif line == "COMMIT":
            table = None
        elif table is None:
            raise IptablesError(f"iptables-save line outside a table: {raw!r}")
        elif line.startswith(":"):
            table.chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            table.chains.setdefault(chain, []).append(rest[0] if rest else "")
    return tables


_BLANK = " \t\r\n"


def split_rule(rule: str) -> list[str]:
    """Rule text -> arguments, undoing iptables-save's double-quoting.

    POSIX shell words, exactly as shlex.split makes them; shlex imports re and
    enum (~10 ms), and every portmap ADD and DEL reads quoted comments.
    """
    args, word, quoted, i, n = [], [], False, 0, len(rule)
    while i < n:
        c = rule[i]
        if c in _BLANK:
            if word or quoted:
                args.append("".join(word))
                word, quoted = [], False
        elif c == "\\":
            if i + 1 == n:
                raise ValueError("No escaped character")
            i += 1
            word.append(rule[i])
        elif c == "'":
            end = rule.find("'", i + 1)
            if end < 0:
                raise ValueError("No closing quotation")
            word.append(rule[i + 1:end])
            quoted, i = True, end
        elif c == '"':
            quoted, i = True, _double_quoted(rule, i + 1, word)
        else:
            word.append(c)
        i += 1
    if word or quoted:
        args.append("".join(word))
    return args


def _double_quoted(rule: str, i: int, word: list[str]) -> int:
    """Append the text up to the closing quote at or after ``i``; its index."""
    n = len(rule)
    while i < n and rule[i] != '"':
        if rule[i] == "\\":
            if i + 1 == n:
                raise ValueError("No escaped character")
            i += 1
            # Inside double quotes a backslash escapes only '"' and itself.
            if rule[i] not in '"\\':
                word.append("\\")
        word.append(rule[i])
        i += 1
    if i == n:
        raise ValueError("No closing quotation")
    return i


def rule_target(rule: str) -> str:
    args = split_rule(rule) if '"' in rule else rule.split()
    for i, arg in enumerate(args[:-1]):
        if arg in ("-j", "--jump", "-g", "--goto"):
            return args[i + 1]
    return ""


def format_args(args: list[str]) -> str:
    """Arguments -> restore-file text, quoted the way iptables-save quotes them."""
    out = []
    for arg in args:
        if arg == "" or any(c.isspace() or c in "\"'\\" for c in arg):
            arg = '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(arg)
    return " ".join(out)


class Iptables:
    """iptables or ip6tables of the calling process's network namespace."""

    def __init__(self, family: int, run=run_command):
        self.family = family
        self.save_bin, self.restore_bin = _BINARIES[family]
        self._run = run

    def save(self, table: str) -> SavedTable:
        proc = self._run([self.save_bin, "-t", table], None)
        if proc.returncode != 0:
            raise IptablesError(f"{self.save_bin} -t {table} failed "
                                f"({proc.returncode}): {proc.stderr.strip()}")
        return parse_save(proc.stdout).get(table, SavedTable(table))

    def restore(self, text: str) -> None:
        proc = self._run([self.restore_bin, "--noflush", "-w"], text)
        if proc.returncode != 0:
            raise RestoreError(self.restore_bin, text, proc.stderr or proc.stdout)


def transact(tables: Iptables, table: str, build, lock, log, attempts: int = 2) -> None:
    """Under ``lock``: save ``table``, ``build(saved) -> restore text``, restore it.

    An empty text means nothing to do. A refused restore is retried from a fresh
    save: another program (one that does not take our lock) may have changed the
    table between our save and our restore.
    """
    for attempt in range(attempts):
        with lock:
            text = build(tables.save(table))
            if not text:
                return
            try:
                tables.restore(text)
                return
            except RestoreError as exc:
                if attempt + 1 == attempts:
                    raise
                log(f"retrying after: {exc.stderr}")


class FileLock:
    """An exclusive flock held for one save-then-restore transaction."""

    def __init__(self, path: str = LOCK_PATH):
        self.path = path
        self._fd = -1

    def __enter__(self):
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self._fd)
        self._fd = -1
