"""Results in every supported cniVersion.

Plugins build and read one internal form, the CNI 1.0.0 result::

    {"cniVersion": "1.0.0",
     "interfaces": [{"name", "mac"?, "sandbox"?, ...}],
     "ips": [{"address": "10.0.0.2/24", "gateway"?: "10.0.0.1", "interface"?: 0}],
     "routes": [{"dst", "gw"?, ...}],
     "dns": {"nameservers"?, "domain"?, "search"?, "options"?}}

0.3.0, 0.3.1 and 0.4.0 differ only by a "version" ("4"/"6") in each ips
entry; 1.1.0 adds optional fields (interface mtu/socketPath/pciID, route
mtu/advmss/priority/table/scope), which older readers ignore and which are
therefore passed through unchanged. Empty interfaces/ips/routes are left
out and "dns" is always present, as libcni writes them.
"""
from __future__ import annotations

INTERNAL_VERSION = "1.0.0"
_PRE_1_0 = ("0.3.0", "0.3.1", "0.4.0")


def _ip_version(address: str) -> str:
    return "6" if ":" in address else "4"


def _list_of_objects(result: dict, key: str) -> list[dict]:
    value = result.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise ValueError(f"{key} is not a list of objects")
    return value


def _validated(result) -> tuple[list[dict], list[dict], list[dict], dict]:
    if not isinstance(result, dict):
        raise ValueError("result is not a JSON object")
    interfaces = _list_of_objects(result, "interfaces")
    ips = _list_of_objects(result, "ips")
    routes = _list_of_objects(result, "routes")
    for i, ip in enumerate(ips):
        if not isinstance(ip.get("address"), str):
            raise ValueError(f"ips[{i}].address is missing or not a string")
        index = ip.get("interface")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)
                                  or index < 0):
            raise ValueError(f"ips[{i}].interface is not an interface index")
    for i, route in enumerate(routes):
        if not isinstance(route.get("dst"), str):
            raise ValueError(f"routes[{i}].dst is missing or not a string")
    dns = result.get("dns") or {}
    if not isinstance(dns, dict):
        raise ValueError("dns is not an object")
    return interfaces, ips, routes, dns


def _assemble(version: str, interfaces, ips, routes, dns) -> dict:
    out: dict = {"cniVersion": version}
    if interfaces:
        out["interfaces"] = interfaces
    if ips:
        out["ips"] = ips
    if routes:
        out["routes"] = routes
    out["dns"] = dns
    return out


def to_internal(result: dict, from_version: str) -> dict:
    """A result (e.g. a prevResult) of ``from_version`` in the internal form.

    Raises ValueError describing the first malformed field.
    """
    interfaces, ips, routes, dns = _validated(result)
    internal_ips = []
    for ip in ips:
        ip = dict(ip)
        ip.pop("version", None)
        internal_ips.append(ip)
    return _assemble(INTERNAL_VERSION, [dict(i) for i in interfaces], internal_ips,
                     [dict(r) for r in routes], dict(dns))


def convert(result: dict, to_version: str) -> dict:
    """The internal ``result`` as ``to_version`` writes it."""
    interfaces, ips, routes, dns = _validated(result)
    out_ips = []
    for ip in ips:
        ip = dict(ip)
        if to_version in _PRE_1_0:
            ip = {"version": _ip_version(ip["address"]), **ip}
        else:
            ip.pop("version", None)
        out_ips.append(ip)
    return _assemble(to_version, [dict(i) for i in interfaces], out_ips,
                     [dict(r) for r in routes], dict(dns))
