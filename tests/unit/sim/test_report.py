"""The --json report's shape and the matrix text."""
import json

from krsim.probe import Probe
from krsim.report import render_matrix, report_json, step_json


def probe(target, result, expect, who=None, protocol="TCP", skip=None):
    p = Probe("x/a", "/ns/a", target, "10.0.0.1", 80, protocol, expect=expect, skip_reason=skip)
    if not skip:
        p.results.append(result)
        p.answered_by.append(who)
    return p


def test_json_shape_and_ok():
    good = [probe("y/b", "allow", "allow", "y/b"), probe("y/c", "deny", "deny")]
    bad = [probe("y/b", "deny", "allow")]
    doc = report_json([step_json(good, {"node-a": {"pods": 1}}), step_json(bad)])
    doc = json.loads(json.dumps(doc))
    assert doc["ok"] is False
    assert [s["ok"] for s in doc["steps"]] == [True, False]
    first = doc["steps"][0]["probes"][0]
    assert {"from", "to", "port", "protocol", "expect", "result", "answered_by"} <= set(first)
    assert (first["from"], first["to"], first["result"], first["answered_by"]) == \
        ("x/a", "y/b", "allow", "y/b")
    assert doc["steps"][1]["probes"][0]["result"] == "deny"
    assert report_json([step_json(good)])["ok"] is True


def test_leftovers_fail_a_step():
    assert step_json([probe("y/b", "allow", "allow")], {}, leftovers_ok=False)["ok"] is False


def test_skipped_probe_is_reported_not_failed():
    p = probe("y/b", None, "allow", protocol="SCTP", skip="this kernel has no SCTP")
    assert p.result == "skip" and p.ok
    text = render_matrix([p])
    assert "1 skipped (this kernel has no SCTP)" in text and "0 not as expected" in text


def test_matrix_marks_mismatches():
    text = render_matrix([probe("y/b", "deny", "allow"), probe("y/c", "allow", "allow", "y/c")])
    assert "✗!" in text and "1 not as expected" in text
    assert "! x/a -> y/b:80 (10.0.0.1): expected allow, got deny" in text
