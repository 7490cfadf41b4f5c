"""The daemon's one iptables writer: our chains and hooks, diffed, one restore per sync.

A controller hands ``TableApplier.apply`` the whole desired state of one table
(its ``Chain``s and the ``Hook`` rules that jump into them from built-in
chains). The applier reads the table with one ``iptables-save -t TABLE``,
compares text, and writes only the difference in one ``iptables-restore
--noflush`` transaction under the same lock the CNI plugins take. Chains that
``owned(name)`` claims but nobody wants any more are flushed and deleted in
that same transaction. Everything else in the table is left exactly as found.

Comparison is textual, so callers must write rules the way iptables-save
prints them; ``canonical_check`` applies twice and names the rules that do not
round-trip. Measured with iptables 1.8.9 (nf_tables backend); every ``in:``
rule below is restored and read back by tests/netns/test_iptables_applier_netns.py,
which fails if a future iptables prints it differently from ``out:``.

- Header fields come first, in the order -s -d -i -o -p, whatever order they
  were written in; matches (-m ...) follow in the order written, then -j/-g.
  ``-p tcp --dport`` gains its implicit ``-m tcp``; ``-m comment`` stays where
  it was written among the matches (after -p/-s, never moved to the end)::

    in:  -m comment --comment "two words" -p tcp --dport 80 -j ACCEPT
    out: -p tcp -m comment --comment "two words" -m tcp --dport 80 -j ACCEPT
    in:  -s 10.0.0.1 -m comment --comment kube-router-netpol -j ACCEPT
    out: -s 10.0.0.1/32 -m comment --comment kube-router-netpol -j ACCEPT
    in:  -j ACCEPT -m comment --comment after
    out: -m comment --comment after -j ACCEPT
    in:  -o eth1 -d 10.0.0.1 -p udp -i eth0 -s 10.0.0.0/24 --dport 53 -j ACCEPT
    out: -s 10.0.0.0/24 -d 10.0.0.1/32 -i eth0 -o eth1 -p udp -m udp --dport 53 -j ACCEPT
    in:  -s 10.1.2.3/16 -d 0.0.0.0/0 -j ACCEPT
    out: -s 10.1.0.0/16 -j ACCEPT

- Strings (comments, prefixes) are printed bare only when they are non-empty
  and made of ``A-Za-z0-9_-``; anything else is double-quoted with ``"``,
  ``\\`` and ``'`` backslash-escaped. ``state.save_quote`` does exactly that::

    in:  -m comment --comment "kube_router-1" -j ACCEPT
    out: -m comment --comment kube_router-1 -j ACCEPT
    in:  -m comment --comment "ns=default/web.1" -j ACCEPT
    out: -m comment --comment "ns=default/web.1" -j ACCEPT

- Marks are hex with a mask; ``--set-mark`` is printed as ``--set-xmark``::

    in:  -j MARK --set-mark 0x10000/0x10000
    out: -j MARK --set-xmark 0x10000/0x10000
    in:  -j MARK --or-mark 0x4000
    out: -j MARK --set-xmark 0x4000/0x4000
    in:  -m mark ! --mark 65536/65536 -j RETURN
    out: -m mark ! --mark 0x10000/0x10000 -j RETURN

- Sets, conntrack states (in kernel bit order: INVALID,NEW,RELATED,ESTABLISHED),
  address types, ports::

    in:  -m set --match-set KRT-PROBE src -j ACCEPT
    out: -m set --match-set KRT-PROBE src -j ACCEPT
    in:  -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    out: -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    in:  -m addrtype --src-type LOCAL -j ACCEPT
    out: -m addrtype --src-type LOCAL -j ACCEPT
    in:  -p tcp -m multiport --dports 80,443,8000:8080 -j ACCEPT
    out: -p tcp -m multiport --dports 80,443,8000:8080 -j ACCEPT
    in:  -p tcp --syn -j ACCEPT
    out: -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT

- Targets: REJECT always names its reply; NFLOG prints the prefix before the
  group; limit rates are normalised and the default burst (5) is dropped::

    in:  -j REJECT
    out: -j REJECT --reject-with icmp-port-unreachable
    in:  -j NFLOG --nflog-group 100
    out: -j NFLOG --nflog-group 100
    in:  -j NFLOG --nflog-group 100 --nflog-prefix "np x"
    out: -j NFLOG --nflog-prefix "np x" --nflog-group 100
    in:  -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100
    out: -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100
    in:  -m limit --limit 60/m --limit-burst 5 -j ACCEPT
    out: -m limit --limit 1/sec -j ACCEPT

- IPv6 (ip6tables)::

    in6:  -s fd00::1 -j ACCEPT
    out6: -s fd00::1/128 -j ACCEPT
    in6:  -j REJECT
    out6: -j REJECT --reject-with icmp6-port-unreachable
    in6:  -p icmpv6 --icmpv6-type echo-request -j ACCEPT
    out6: -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT

Restore quirks this module is built around (measured, nf_tables backend):
- ``:INPUT ACCEPT [0:0]`` in a --noflush restore keeps INPUT's rules but sets
  its policy (a FORWARD DROP policy silently became ACCEPT). Built-in chains
  are therefore never declared; they are edited with -D/-I only.
- ``-X`` of a chain still referenced fails the transaction ("CHAIN_DEL failed
  (Device or resource busy)"), so stale chains are flushed first and deleted
  last, after every jump into them was removed.
- ``-D CHAIN RULE`` deletes the first rule with that exact text; ``-I CHAIN N``
  counts rules inserted earlier in the same transaction and fails beyond
  length + 1 ("Index of insertion too big").
- Chain names longer than 28 characters are refused ("must be under 29 chars").
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Mapping, Sequence

from lowlevel import limits
from lowlevel.xtables import FileLock, Iptables, SavedTable, rule_target, run_command, transact
from proxyd.kernel import names
from proxyd.kernel.state import Chain, Hook


BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}


class NonCanonicalError(Exception):
    """Rules that iptables-save prints differently from how they were written."""


validate_chain_name = limits.check_chain_name


def build_desired(table: str, owned: Callable[[str], bool], chains: Iterable[Chain],
                  hooks: Iterable[Hook]) -> tuple[dict[str, tuple[str, ...]], dict[str, list[str]]]:
    """Check the caller's state; chains by name and hook rules per built-in chain, in order."""
    builtins = BUILTIN_CHAINS[table]
    desired: dict[str, tuple[str, ...]] = {}
    for chain in chains:
        validate_chain_name(chain.name)
        if chain.name in builtins or not owned(chain.name):
            raise ValueError(f"chain {chain.name!r} is not ours: only owned chains are "
                             "declared (declaring a chain flushes it)")
        if chain.name in desired:
            raise ValueError(f"chain {chain.name!r} is given twice")
        _check_rules(chain.name, chain.rules)
        desired[chain.name] = tuple(chain.rules)
    wanted: dict[str, list[str]] = {}
    for hook in hooks:
        _check_rules(hook.builtin, [hook.rule])
        if hook.builtin not in builtins:
            raise ValueError(f"{hook.builtin!r} is not a built-in chain of table {table}")
        if not owned(rule_target(hook.rule)):
            raise ValueError(f"hook {hook.rule!r} must jump to one of our chains")
        if hook.rule in wanted.setdefault(hook.builtin, []):
            raise ValueError(f"hook {hook.rule!r} is given twice for {hook.builtin}")
        wanted[hook.builtin].append(hook.rule)
    for name, rules in [*desired.items(), *wanted.items()]:
        for rule in rules:
            target = rule_target(rule)
            if target and target not in builtins and owned(target) and target not in desired:
                raise ValueError(f"{name}: {rule!r} jumps to {target}, which is not a desired chain")
    return desired, wanted


def _check_rules(name: str, rules) -> None:
    if isinstance(rules, str):
        raise ValueError(f"chain {name!r}: rules must be a sequence of rule texts, not one string")
    for rule in rules:
        if not rule.strip() or "\n" in rule:
            raise ValueError(f"chain {name!r}: bad rule text {rule!r}")


def _hook_edits(rules: list[str], want: list[str], owned,
                sibling=lambda target: False) -> tuple[list[str], list[str], int]:
    """(rules to delete, rules to insert, the position they go after) so ``want`` leads ``rules``.

    Rules jumping to a sibling's chains (another controller of this daemon
    hooking the same built-in chain) are looked through: each controller keeps
    its hooks ahead of every foreign rule without fighting the others over
    position 1. The leading hooks that are already right and appear only once
    stay; every other rule of ours after them is deleted by its text (-D
    removes the first copy, and none of the kept rules has that text) and the
    rest of the hooks are inserted right after the last kept one.
    """
    mine = [rule for rule in rules if not sibling(rule_target(rule))]
    k = 0
    while k < len(want) and k < len(mine) and mine[k] == want[k] and mine.count(want[k]) == 1:
        k += 1
    deletes = [rule for rule in mine[k:] if owned(rule_target(rule))]
    return deletes, want[k:], (rules.index(want[k - 1]) + 1 if k else 0)


def build_restore(table: str, saved: SavedTable, desired: dict[str, tuple[str, ...]],
                  hooks: dict[str, list[str]], owned,
                  sibling=lambda target: False) -> tuple[str, list[str]]:
    """Restore text that makes our part of ``saved`` match; "" when it already does.

    Also returns the sorted names of every chain the text changes.
    """
    builtins = BUILTIN_CHAINS[table]
    rewrite = sorted(name for name, rules in desired.items()
                     if not saved.has_chain(name) or saved.rules(name) != list(rules))
    stale = sorted(name for name in saved.chains
                   if name not in builtins and name not in desired and owned(name))
    edits = []
    for name in sorted(set(saved.chains) | set(hooks)):
        if name in desired or name in stale:
            continue
        deletes, inserts, after = _hook_edits(saved.rules(name), hooks.get(name, []), owned,
                                              sibling)
        if deletes or inserts:
            edits.append((name, deletes, after, inserts))
    if not (rewrite or stale or edits):
        return "", []
    lines = [f"*{table}"]
    lines += [f":{name} - [0:0]" for name in sorted(rewrite + stale)]
    lines += [f"-A {name} {rule}" for name in rewrite for rule in desired[name]]
    for name, deletes, kept, inserts in edits:
        lines += [f"-D {name} {rule}" for rule in deletes]
        lines += [f"-I {name} {kept + i} {rule}" for i, rule in enumerate(inserts, 1)]
    lines += [f"-X {name}" for name in stale]
    lines.append("COMMIT")
    changed = sorted(set(rewrite) | set(stale) | {name for name, *_ in edits})
    return "\n".join(lines) + "\n", changed


def build_changes(table: str, applied: Mapping[str, tuple[str, ...]],
                  changed: Mapping[str, Sequence[str] | None], owned) -> tuple[str, list[str]]:
    """Restore text that rewrites only the ``changed`` chains (rules; None: delete it)
    against ``applied``, what the table is known to hold; "" when nothing differs.
    Also returns the sorted names of the chains it changes."""
    builtins = BUILTIN_CHAINS[table]
    rewrite, delete = [], []
    for name in sorted(changed):
        rules = changed[name]
        if name in builtins or not owned(name):
            raise ValueError(f"chain {name!r} is not ours: only owned chains are changed")
        if rules is None:
            if name in applied:
                delete.append(name)
            continue
        validate_chain_name(name)
        _check_rules(name, rules)
        if applied.get(name) != tuple(rules):
            rewrite.append(name)

    def exists_after(target: str) -> bool:
        return changed[target] is not None if target in changed else target in applied
    for name in rewrite:
        for rule in changed[name]:
            target = rule_target(rule)
            if target and target not in builtins and owned(target) and not exists_after(target):
                raise ValueError(f"{name}: {rule!r} jumps to {target}, which is not a chain")
    if not (rewrite or delete):
        return "", []
    edits = {name: edit for name in rewrite if name in applied
             for edit in [_rule_edits(applied[name], tuple(changed[name]))] if edit is not None}
    flush = sorted(set(rewrite) - edits.keys())
    lines = [f"*{table}", *(f":{name} - [0:0]" for name in sorted(flush + delete))]
    lines += [f"-A {name} {rule}" for name in flush for rule in changed[name]]
    for name, (deletes, inserts) in sorted(edits.items()):
        lines += [f"-D {name} {rule}" for rule in deletes]
        lines += [f"-I {name} {position} {rule}" for position, rule in inserts]
    lines += [f"-X {name}" for name in delete]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n", sorted(rewrite + delete)


def _rule_edits(old: tuple[str, ...], new: tuple[str, ...]):
    """(rules to delete, (position, rule) to insert) turning ``old`` into ``new`` in place, when
    that is much shorter than rewriting the chain (a pod's jump in a chain of hundreds);
    None otherwise. Needs every rule to be unique (-D removes the first copy) and the rules
    both keep to be in the same order; deletes go first, then inserts in ascending position."""
    old_set, new_set = set(old), set(new)
    if len(old_set) != len(old) or len(new_set) != len(new):
        return None
    deletes = [rule for rule in old if rule not in new_set]
    inserts = [(i, rule) for i, rule in enumerate(new, 1) if rule not in old_set]
    if 2 * (len(deletes) + len(inserts)) >= len(new) or \
            [r for r in old if r in new_set] != [r for r in new if r in old_set]:
        return None
    return deletes, inserts


class TableApplier:
    """Keeps our chains and hooks in one table of one family as desired.

    ``apply`` reads the table and repairs all of our part of it (the start, the
    periodic resync, the retry after an error); ``apply_changes`` trusts what the
    last one left and writes only the chains a change touched, without reading.
    """

    def __init__(self, family: int, table: str, owned: Callable[[str], bool], *, run=run_command,
                 lock=None, log=logging.getLogger(__name__),
                 siblings: Callable[[str], bool] | None = None):
        """``siblings``: chains of this daemon's other controllers (default: every chain
        names.py knows); their hooks may sit among ours at the top of a built-in chain."""
        if table not in BUILTIN_CHAINS:
            raise ValueError(f"unknown iptables table {table!r}")
        self.family, self.table, self.owned = family, table, owned
        siblings = names.is_daemon_chain if siblings is None else siblings
        self._sibling = lambda target: bool(target) and not owned(target) and siblings(target)
        self._tables = Iptables(family, run)
        self._lock = FileLock() if lock is None else lock
        self._log = log
        self.label = f"{self._tables.restore_bin} -t {table}"
        # Every chain the last apply changed (re-declared, deleted, or had hooks
        # and jumps edited), sorted; empty once a sync converged.
        self.last_rewritten: list[str] = []
        self.last_saved = SavedTable(table)
        # Our chains as the kernel holds them after the last successful write; None
        # until a reading apply, and again after any failure.
        self._applied: dict[str, tuple[str, ...]] | None = None

    def apply(self, chains: Iterable[Chain], hooks: Iterable[Hook]) -> int:
        """Make our part of the table match; returns restore lines written (0 = nothing executed but
        one iptables-save)."""
        desired, wanted = build_desired(self.table, self.owned, chains, hooks)
        written = 0

        def build(saved: SavedTable) -> str:
            nonlocal written
            text, self.last_rewritten = build_restore(self.table, saved, desired, wanted, self.owned,
                                                      self._sibling)
            self.last_saved, written = saved, text.count("\n")
            return text

        self._applied = None
        transact(self._tables, self.table, build, self._lock, self._retrying)
        self._applied = desired
        if written:
            self._log.debug("%s: %d restore lines, changed %s", self.label, written,
                            " ".join(self.last_rewritten))
        return written

    @property
    def has_applied(self) -> bool:
        """Whether ``apply_changes`` can be used (a reading apply succeeded since the
        last failure)."""
        return self._applied is not None

    def apply_changes(self, changed: Mapping[str, Sequence[str] | None]) -> int:
        """Rewrite only the ``changed`` chains (rules, or None to delete one) in one
        restore, without reading the table; hooks are left as they are. Returns the
        restore lines written. Needs a successful ``apply`` first; a failure forgets
        what was applied, so the next write must be a reading ``apply``."""
        if self._applied is None:
            raise RuntimeError(f"{self.label}: nothing applied yet to change; apply() first")
        text, touched = build_changes(self.table, self._applied, changed, self.owned)
        if not text:
            return 0
        applied, self._applied = self._applied, None
        with self._lock:
            self._tables.restore(text)
        for name in touched:
            rules = changed[name]
            if rules is None:
                applied.pop(name, None)
            else:
                applied[name] = tuple(rules)
        self._applied, self.last_rewritten = applied, touched
        self._log.debug("%s: %d restore lines, changed %s", self.label, text.count("\n"),
                        " ".join(touched))
        return text.count("\n")

    def cleanup(self) -> list[str]:
        """Remove every chain and hook of ours from the table (--cleanup-config); one
        "iptables -t TABLE CHAIN" line per chain removed or changed."""
        if not self.apply([], []):
            return []
        tool = self._tables.save_bin.removesuffix("-save")
        return [f"{tool} -t {self.table} {chain}" for chain in self.last_rewritten]

    def _retrying(self, message: str) -> None:
        self._log.warning("%s: %s", self.label, message)


def canonical_check(applier: TableApplier, chains: Iterable[Chain], hooks: Iterable[Hook]) -> None:
    """Apply twice; raise NonCanonicalError naming every rule the second pass would rewrite.

    A rule written in a form iptables-save prints differently never matches, so
    its chain is rewritten on every sync. The debug path for desired-state builders.
    """
    chains, hooks = list(chains), list(hooks)
    applier.apply(chains, hooks)
    if not applier.apply(chains, hooks):
        return
    saved = applier.last_saved
    wanted = {chain.name: list(chain.rules) for chain in chains}
    for hook in hooks:
        wanted.setdefault(hook.builtin, []).append(hook.rule)
    report = []
    for name in applier.last_rewritten:
        want, printed = wanted.get(name, []), saved.rules(name)
        report += [f"  {name}: wrote    {rule}" for rule in want if rule not in printed]
        report += [f"  {name}: printed  {rule}" for rule in printed if rule not in want
                   and (applier.owned(name) or applier.owned(rule_target(rule)))]
    raise NonCanonicalError(
        f"{applier.label}: a second apply still changes {', '.join(applier.last_rewritten)}; "
        "write these rules as iptables-save prints them:\n" + "\n".join(report))
