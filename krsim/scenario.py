"""Scenario files: parsing and validation (pure: no I/O beyond reading the text).

```yaml
nodes: [node-a, node-b]
steps:
  - title: what this step shows
    apply: [ ...Namespace, Pod, Service, NetworkPolicy manifests... ]
    delete: [{kind: Pod, namespace: x, name: a}]
    expect: allow        # for the generated probes when ``probes`` is omitted
    probes:              # omitted = every pod to every pod on every declared port
      - {from: x/a, to: y/b, port: 80, protocol: TCP, expect: allow, count: 1}
```

Every error names the entry it is about (``steps[1].probes[0].to: ...``).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import yaml

KINDS = {"Namespace": False, "Pod": True, "Service": True, "NetworkPolicy": True}  # -> namespaced
PROTOCOLS = ("TCP", "UDP", "SCTP")
EXPECTS = ("allow", "deny")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_STEP_KEYS = {"title", "apply", "delete", "probes", "expect"}
_PROBE_KEYS = {"from", "to", "port", "protocol", "expect", "count"}
TARGET_FORMS = "ns/pod, node/name, svc/ns/name, nodeport/node/port or an IP"
SOURCE_FORMS = "ns/pod or node/name"


class ScenarioError(ValueError):
    """A scenario that cannot run; the message starts with the path of the bad entry."""


@dataclass(frozen=True)
class Endpoint:
    """Where a probe starts or ends. ``kind`` is pod, node, svc, nodeport or ip."""
    kind: str
    parts: tuple

    @property
    def label(self) -> str:
        if self.kind == "ip":
            return self.parts[0]
        return "/".join(str(p) for p in (() if self.kind == "pod" else (self.kind,)) + self.parts)


@dataclass(frozen=True)
class ProbeSpec:
    path: str                 # "steps[0].probes[1]", for errors found later
    source: Endpoint
    target: Endpoint
    port: int | None = None   # None: every declared port of the target
    protocol: str | None = None
    expect: str | None = None
    count: int = 1


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Step:
    apply: tuple = ()                     # manifests (dicts), in order
    delete: tuple = ()                    # ObjectRef
    probes: tuple | None = None           # None: the full pod matrix
    expect: str | None = None             # for the generated matrix
    title: str = ""


@dataclass(frozen=True)
class Scenario:
    nodes: tuple
    steps: tuple
    name: str = "scenario"
    services_probed: bool = field(default=False)


def _fail(path: str, message: str):
    raise ScenarioError(f"{path}: {message}")


def parse_endpoint(text, path: str, *, source: bool = False) -> Endpoint:
    forms = SOURCE_FORMS if source else TARGET_FORMS
    if not isinstance(text, str):
        _fail(path, f"{text!r} is not {forms}")
    parts = text.split("/")
    if len(parts) == 2 and parts[0] == "node" and _NAME.match(parts[1]):
        return Endpoint("node", (parts[1],))
    if len(parts) == 2 and all(_NAME.match(p) for p in parts):
        return Endpoint("pod", tuple(parts))
    if not source:
        if len(parts) == 3 and parts[0] == "svc" and all(_NAME.match(p) for p in parts[1:]):
            return Endpoint("svc", tuple(parts[1:]))
        if len(parts) == 3 and parts[0] == "nodeport" and _NAME.match(parts[1]) and \
                parts[2].isdigit() and 0 < int(parts[2]) < 65536:
            return Endpoint("nodeport", (parts[1], int(parts[2])))
        try:
            return Endpoint("ip", (str(ipaddress.ip_address(text)),))
        except ValueError:
            pass
    _fail(path, f'"{text}" is not {forms}')


def _probe(raw, path: str, nodes: tuple) -> ProbeSpec:
    if not isinstance(raw, dict):
        _fail(path, "a probe is a mapping with from, to, port, protocol, expect, count")
    unknown = sorted(set(raw) - _PROBE_KEYS)
    if unknown:
        _fail(f"{path}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_PROBE_KEYS))})")
    for key in ("from", "to"):
        if key not in raw:
            _fail(f"{path}.{key}", "missing")
    src = parse_endpoint(raw["from"], f"{path}.from", source=True)
    dst = parse_endpoint(raw["to"], f"{path}.to")
    for end, key in ((src, "from"), (dst, "to")):
        if end.kind in ("node", "nodeport") and end.parts[0] not in nodes:
            _fail(f"{path}.{key}", f'node "{end.parts[0]}" is not one of the scenario\'s nodes '
                                   f"({', '.join(nodes)})")
    port = raw.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 0 < port < 65536):
        _fail(f"{path}.port", f"{port!r} is not a port number (1-65535)")
    if dst.kind == "nodeport":
        if port is not None and port != dst.parts[1]:
            _fail(f"{path}.port", f"{port} differs from the node port in to ({dst.parts[1]})")
        port = dst.parts[1]
    if port is None and dst.kind in ("ip", "node"):
        _fail(f"{path}.port", f"required when probing {dst.kind} {dst.label}")
    protocol = raw.get("protocol")
    if protocol is not None:
        protocol = str(protocol).upper()
        if protocol not in PROTOCOLS:
            _fail(f"{path}.protocol", f"{raw['protocol']!r} is not one of {', '.join(PROTOCOLS)}")
    elif port is not None:
        protocol = "TCP"
    expect = raw.get("expect")
    if expect is not None and expect not in EXPECTS:
        _fail(f"{path}.expect", f"{expect!r} is not allow or deny")
    count = raw.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 100:
        _fail(f"{path}.count", f"{count!r} is not a number from 1 to 100")
    return ProbeSpec(path, src, dst, port, protocol, expect, count)


def _manifest(raw, path: str, nodes: tuple) -> dict:
    if not isinstance(raw, dict):
        _fail(path, "a manifest is a mapping with kind and metadata")
    kind = raw.get("kind")
    if kind not in KINDS:
        _fail(f"{path}.kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    meta = raw.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) \
            or not _NAME.match(meta["name"]):
        _fail(f"{path}.metadata.name", "missing or not a valid name")
    if KINDS[kind] and not _NAME.match(str(meta.get("namespace", "default"))):
        _fail(f"{path}.metadata.namespace", f"{meta.get('namespace')!r} is not a valid name")
    if kind == "Pod":
        node = (raw.get("spec") or {}).get("nodeName")
        if node not in nodes:
            _fail(f"{path}.spec.nodeName", f"{node!r} is not one of the scenario's nodes "
                                           f"({', '.join(nodes)}); the simulation has no "
                                           "scheduler, so every pod names its node")
    return raw


def _ref(raw, path: str) -> ObjectRef:
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        _fail(f"{path}.kind", f"a delete names kind ({', '.join(KINDS)}), namespace, name")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        _fail(f"{path}.name", f"{name!r} is not a valid name")
    namespace = raw.get("namespace", "default") if KINDS[raw["kind"]] else ""
    return ObjectRef(raw["kind"], namespace, name)


def _list(raw, path: str) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        _fail(path, "must be a list")
    return raw


def _step(raw, path: str, nodes: tuple) -> Step:
    if not isinstance(raw, dict):
        _fail(path, "a step is a mapping with apply, delete, probes, expect")
    unknown = sorted(set(raw) - _STEP_KEYS)
    if unknown:
        _fail(f"{path}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_STEP_KEYS))})")
    apply = tuple(_manifest(m, f"{path}.apply[{i}]", nodes)
                  for i, m in enumerate(_list(raw.get("apply"), f"{path}.apply")))
    delete = tuple(_ref(r, f"{path}.delete[{i}]")
                   for i, r in enumerate(_list(raw.get("delete"), f"{path}.delete")))
    probes = None
    if "probes" in raw and raw["probes"] is not None:
        probes = tuple(_probe(p, f"{path}.probes[{i}]", nodes)
                       for i, p in enumerate(_list(raw["probes"], f"{path}.probes")))
    expect = raw.get("expect")
    if expect is not None and expect not in EXPECTS:
        _fail(f"{path}.expect", f"{expect!r} is not allow or deny")
    title = raw.get("title", "")
    if not isinstance(title, str):
        _fail(f"{path}.title", "must be text")
    return Step(apply, delete, probes, expect, title)


def parse_scenario(data, name: str = "scenario") -> Scenario:
    """A Scenario from the loaded YAML document; ScenarioError names the first bad entry."""
    if not isinstance(data, dict):
        _fail("(top)", "a scenario is a mapping with nodes and steps")
    unknown = sorted(set(data) - {"nodes", "steps"})
    if unknown:
        _fail(unknown[0], "unknown key (known: nodes, steps)")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        _fail("nodes", "a non-empty list of node names")
    for i, node in enumerate(nodes):
        if not isinstance(node, str) or not _NAME.match(node) or len(node) > 20:
            _fail(f"nodes[{i}]", f"{node!r} is not a node name (lowercase, at most 20 chars)")
    if len(set(nodes)) != len(nodes):
        _fail("nodes", "names repeat")
    nodes = tuple(nodes)
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        _fail("steps", "a non-empty list of steps")
    parsed = tuple(_step(s, f"steps[{i}]", nodes) for i, s in enumerate(steps))
    probed = any(p.target.kind in ("svc", "nodeport")
                 for s in parsed for p in (s.probes or ()))
    return Scenario(nodes, parsed, name, probed)


def load_scenario(text: str, name: str = "scenario") -> Scenario:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"(yaml): {exc}".replace("\n", " ")) from None
    return parse_scenario(data, name)
