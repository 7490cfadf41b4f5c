"""metav1.LabelSelector semantics: matchLabels AND every matchExpression.

An empty selector ({}) selects everything; None selects nothing (the API's
``LabelSelectorAsSelector``). An operator the API does not know raises
ValueError naming it: the caller decides what an unusable selector means.
"""
from __future__ import annotations

from typing import Mapping

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def check_selector(selector: Mapping | None) -> None:
    """Raise ValueError for an operator the API does not know, whatever labels it meets."""
    for expr in (selector or {}).get("matchExpressions") or ():
        if expr.get("operator") not in OPERATORS:
            raise ValueError(f"unknown label selector operator {expr.get('operator')!r}")


def selects(selector: Mapping | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or ()
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown label selector operator {op!r}")
        if not ok:
            return False
    return True
