"""Checks the schema cannot express: CIDRs, ranges inside subnets, conflicting modes.

Pure: a schema-valid document in, Problems out.
"""
from __future__ import annotations

import ipaddress

from conf import cidr, defaults
from conf.problems import Problem, json_path

LEGACY_KEYS = ("subnet", "rangeStart", "rangeEnd", "gateway")


def plugins_of(doc: dict) -> list[tuple[list, dict]]:
    """(path prefix, plugin) for a conflist's plugins, or the single plugin of a .conf."""
    if "plugins" in doc:
        return [(["plugins", i], p) for i, p in enumerate(doc["plugins"])]
    return [([], doc)]


def _check_range(path: list, rng: dict, problems: list[Problem]):
    try:
        net = cidr.parse_subnet(rng.get("subnet"))
    except ValueError as exc:
        problems.append(Problem(json_path(path + ["subnet"]), f"subnet {exc}"))
        return None
    for key in ("rangeStart", "rangeEnd", "gateway"):
        if key not in rng:
            continue
        try:
            ip = cidr.parse_ip(rng[key])
        except ValueError as exc:
            problems.append(Problem(json_path(path + [key]), str(exc)))
            continue
        if ip.version != net.version or ip not in net:
            problems.append(Problem(json_path(path + [key]),
                                    f"{ip} is outside subnet {net}: pick an address inside it"))
    start, end = rng.get("rangeStart"), rng.get("rangeEnd")
    try:
        if start and end and cidr.parse_ip(start) > cidr.parse_ip(end):
            problems.append(Problem(json_path(path + ["rangeStart"]),
                                    f"rangeStart {start} is after rangeEnd {end}: swap them"))
    except (ValueError, TypeError):
        pass  # reported above
    return net


def _check_ranges(path: list, ipam: dict, problems: list[Problem]) -> None:
    nets: list[tuple[list, object]] = []
    if "subnet" in ipam:
        legacy = {k: ipam[k] for k in LEGACY_KEYS if k in ipam}
        net = _check_range(path, legacy, problems)
        if net is not None:
            nets.append((path + ["subnet"], net))
    for i, rset in enumerate(ipam.get("ranges", [])):
        versions = set()
        for j, rng in enumerate(rset):
            rpath = path + ["ranges", i, j]
            net = _check_range(rpath, rng, problems)
            if net is None:
                continue
            if versions and net.version not in versions:
                problems.append(Problem(json_path(rpath + ["subnet"]),
                                        "a range set mixes IPv4 and IPv6: give each family "
                                        "its own range set"))
            versions.add(net.version)
            nets.append((rpath + ["subnet"], net))
    overlap = cidr.find_overlap(n for _, n in nets)
    if overlap:
        (p1, n1), (p2, n2) = nets[overlap[0]], nets[overlap[1]]
        problems.append(Problem(json_path(p2), f"{n2} overlaps {n1} at {json_path(p1)}: "
                                               "remove one of them or make them disjoint"))


def _check_routes(path: list, ipam: dict, problems: list[Problem]) -> None:
    for i, route in enumerate(ipam.get("routes", [])):
        rpath = path + ["routes", i]
        try:
            ipaddress.ip_network(route["dst"])
        except ValueError:
            problems.append(Problem(json_path(rpath + ["dst"]),
                                    f"{route['dst']!r} is not a valid destination CIDR "
                                    "(write it like 0.0.0.0/0)"))
        if "gw" in route:
            try:
                cidr.parse_ip(route["gw"])
            except ValueError as exc:
                problems.append(Problem(json_path(rpath + ["gw"]), str(exc)))


def semantic_problems(doc: dict) -> list[Problem]:
    problems: list[Problem] = []
    for path, plugin in plugins_of(doc):
        if plugin.get("type") in defaults.BRIDGE_TYPES:
            if plugin.get("hairpinMode") and plugin.get("promiscMode"):
                problems.append(Problem(json_path(path + ["promiscMode"]),
                                        "hairpinMode and promiscMode cannot both be on (the "
                                        "bridge plugin refuses it): set promiscMode to false"))
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") in defaults.HOST_LOCAL_TYPES:
            _check_ranges(path + ["ipam"], ipam, problems)
            _check_routes(path + ["ipam"], ipam, problems)
            if plugin.get("isDefaultGateway"):
                _check_no_default_route(path + ["ipam"], ipam, problems)
    return sorted(problems)


def _check_no_default_route(path: list, ipam: dict, problems: list[Problem]) -> None:
    # The bridge plugin adds the default route for isDefaultGateway and then the IPAM
    # routes: the same route twice, and the pod's ADD fails with "file exists".
    for i, route in enumerate(ipam.get("routes", [])):
        try:
            is_default = ipaddress.ip_network(route["dst"]).prefixlen == 0
        except ValueError:
            continue
        if is_default:
            problems.append(Problem(json_path(path + ["routes", i, "dst"]),
                                    "a default route here and isDefaultGateway: true make "
                                    "the bridge plugin add it twice (ADD fails with \"file "
                                    "exists\"): remove this route"))


def plugin_types(doc: dict) -> list[tuple[str, str]]:
    """(JSON path of the type field, executable name) for every plugin and IPAM plugin."""
    found = []
    for path, plugin in plugins_of(doc):
        found.append((json_path(path + ["type"]), plugin["type"]))
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str):
            found.append((json_path(path + ["ipam", "type"]), ipam["type"]))
    return found
