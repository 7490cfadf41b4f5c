"""Connectivity matrices for people and the JSON report for machines."""
from __future__ import annotations

from krsim.probe import Probe

ALLOW, DENY, SKIP = "✓", "✗", "-"
_MARK = {"allow": ALLOW, "deny": DENY, "skip": SKIP}


def _column(p: Probe) -> str:
    return f"{p.target}:{p.port}" + ("" if p.protocol == "TCP" else f"/{p.protocol.lower()}")


def render_matrix(probes: list[Probe], color: bool = False) -> str:
    """Rows are sources, columns targets; a mismatch with the expectation is marked ``!``."""
    rows = sorted({p.source for p in probes})
    cols = sorted({_column(p) for p in probes})
    cell = {(p.source, _column(p)): p for p in probes}
    width = max([len(r) for r in rows] + [4])
    colw = [max(len(c), 3) for c in cols]
    lines = [" " * width + "  " + "  ".join(c.ljust(w) for c, w in zip(cols, colw))]
    for r in rows:
        parts = []
        for c, w in zip(cols, colw):
            p = cell.get((r, c))
            if p is None:
                parts.append("·".ljust(w))
                continue
            text = _MARK[p.result] + ("" if p.ok else "!")
            text = text.ljust(w)
            if color and not p.ok:
                text = f"\033[1;31m{text}\033[0m"
            parts.append(text)
        lines.append(r.ljust(width) + "  " + "  ".join(parts))
    bad = [p for p in probes if not p.ok]
    skipped = [p for p in probes if p.skip_reason]
    lines.append(f"{len(probes)} probes, {len(bad)} not as expected"
                 + (f", {len(skipped)} skipped ({skipped[0].skip_reason})" if skipped else ""))
    for p in bad:
        lines.append(f"  ! {p.source} -> {_column(p)} ({p.address}): expected {p.expect}, "
                     f"got {p.result}")
    return "\n".join(lines)


def probe_json(p: Probe) -> dict:
    return {"from": p.source, "to": p.target, "address": p.address, "port": p.port,
            "protocol": p.protocol, "expect": p.expect, "result": p.result,
            "answered_by": p.answered_by[0] if p.count == 1 else p.answered_by}


def step_json(probes: list[Probe], leftovers: dict | None = None,
              leftovers_ok: bool = True) -> dict:
    """One step of the ``--json`` report."""
    return {"ok": leftovers_ok and all(p.ok for p in probes),
            "probes": [probe_json(p) for p in probes],
            "leftovers": leftovers or {}, "leftovers_ok": leftovers_ok}


def report_json(steps: list[dict]) -> dict:
    return {"ok": all(s["ok"] for s in steps), "steps": steps}
