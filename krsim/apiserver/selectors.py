"""Label and field selectors, parsed as the API server parses ``?labelSelector=``/``?fieldSelector=``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from krsim.apiserver.errors import ApiError

_IDENT = r"[A-Za-z0-9_./-]+"
_SET = re.compile(rf"^\s*({_IDENT})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ = re.compile(rf"^\s*({_IDENT})\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_IDENT})\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str                      # in, notin, exists, !exists
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "in":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside an ``in (...)`` value list."""
    terms, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    reqs = []
    for term in _split_terms(text):
        if m := _SET.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _EQ.match(term):
            reqs.append(Requirement(m.group(1), "notin" if m.group(2) == "!=" else "in",
                                    frozenset([m.group(3)])))
        elif m := _EXISTS.match(term):
            reqs.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise ApiError(400, "BadRequest",
                           f'unable to parse requirement: found \'{term.strip()}\', '
                           "expected: valid label selector")
    return reqs


def labels_match(reqs: list[Requirement], obj: dict) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector object (matchLabels + matchExpressions) or a Service's plain map."""
    if not selector:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return all(labels.get(k) == v for k, v in selector.items())
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        req = Requirement(expr["key"], ops[expr["operator"]], frozenset(expr.get("values") or ()))
        if not req.matches(labels):
            return False
    return True


FIELD_GETTERS: dict[str, Callable[[dict], str]] = {
    "metadata.name": lambda o: o.get("metadata", {}).get("name", ""),
    "metadata.namespace": lambda o: o.get("metadata", {}).get("namespace", ""),
}
KIND_FIELDS: dict[str, dict[str, Callable[[dict], str]]] = {
    "pods": {
        "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
        "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
        "spec.restartPolicy": lambda o: (o.get("spec") or {}).get("restartPolicy", ""),
        "status.podIP": lambda o: (o.get("status") or {}).get("podIP", ""),
    },
    "namespaces": {"status.phase": lambda o: (o.get("status") or {}).get("phase", "")},
    "nodes": {"spec.unschedulable": lambda o: str(bool((o.get("spec") or {})
                                                        .get("unschedulable"))).lower()},
}

FieldRequirement = tuple[Callable[[dict], str], bool, str]   # getter, equal?, value


def parse_field_selector(text: str | None, plural: str) -> list[FieldRequirement]:
    if not text:
        return []
    getters = {**FIELD_GETTERS, **KIND_FIELDS.get(plural, {})}
    reqs = []
    for term in text.split(","):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid selector: '{text}'; can't understand "
                                              f"'{term}'")
        if m.group(1) not in getters:
            raise ApiError(400, "BadRequest", f'"{m.group(1)}" is not a known field selector: '
                                              f'only "{", ".join(sorted(getters))}"')
        reqs.append((getters[m.group(1)], m.group(2) != "!=", m.group(3)))
    return reqs


def fields_match(reqs: list[FieldRequirement], obj: dict) -> bool:
    return all((getter(obj) == value) == equal for getter, equal, value in reqs)
