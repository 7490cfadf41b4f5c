"""validate: schema, semantics, and the executables a runtime will look for."""
from __future__ import annotations

import os

from conf import defaults
from conf.problems import Problem
from conf.schema import schema_problems
from conf.semantics import plugin_types, semantic_problems


def binary_problems(doc: dict, bin_dir: str) -> list[Problem]:
    problems = []
    wanted = plugin_types(doc) + [("(bin dir)", defaults.LOOPBACK)]
    for path, name in wanted:
        exe = os.path.join(bin_dir, name)
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            continue
        if name == defaults.LOOPBACK:
            fix = ("container runtimes exec it for every pod: copy it from "
                   "containernetworking-plugins (kube-router-cni install does)")
        elif name in defaults.LAUNCHERS:
            fix = "run `kube-router-cni install`"
        else:
            fix = "install containernetworking-plugins or pass --cni-bin-dir"
        problems.append(Problem(path, f"plugin {name!r} not found as an executable "
                                      f"in {bin_dir}: {fix}"))
    return problems


def validate_doc(doc: object, bin_dir: str | None = None) -> list[Problem]:
    """All problems of a parsed document; binaries are checked when ``bin_dir`` is given."""
    if not isinstance(doc, dict):
        return [Problem("(top level)", "the configuration must be a JSON object")]
    problems = schema_problems(doc)
    if problems:
        # Semantic checks assume the schema's types; report shape errors first.
        return problems
    problems = semantic_problems(doc)
    if bin_dir is not None:
        problems += binary_problems(doc, bin_dir)
    return problems
