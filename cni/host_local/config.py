"""host-local's view of the network configuration (pure).

Every invalid value is reported with its key path and the value, e.g.
``ipam.ranges[0][0].subnet: "10.0.0.0/33" is not a CIDR``.
"""
from __future__ import annotations

from cni import fastjson as json

from cni import skel
from cni.host_local import allocator
from cni.host_local.allocator import Range
from cni.record import Record
from lowlevel import ipnet

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
_ROUTE_UINTS = ("mtu", "advmss", "priority", "table", "scope")


class IpamConf(Record):
    """name, data_dir, resolv_conf, range_sets (list[list[Range]]), routes (list[dict]),
    requested (list[(version, int address)])."""

    __slots__ = ("name", "data_dir", "resolv_conf", "range_sets", "routes", "requested")


def _invalid(key: str, value, problem: str) -> skel.CniError:
    return skel.CniError(skel.INVALID_CONFIG, f"{key}: {json.dumps(value)} {problem}")


def _ipam_section(conf: dict) -> dict:
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise skel.CniError(skel.INVALID_CONFIG, "ipam: missing or not an object")
    return ipam


def _path(key: str, value) -> str:
    """A file system path from the config: a string the kernel can take (UTF-8, no NUL)."""
    if not isinstance(value, str):
        raise _invalid(key, value, "is not a string")
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        raise _invalid(key, value, "is not valid UTF-8") from None
    if b"\0" in encoded:
        raise _invalid(key, value, "contains a NUL character")
    return value


def parse_store_location(conf: dict) -> tuple[str, str]:
    """(dataDir, network name): all DEL and GC need, so they work on any range config."""
    data_dir = _path("ipam.dataDir", _ipam_section(conf).get("dataDir") or DEFAULT_DATA_DIR)
    return data_dir, conf["name"]


def parse_ipam_conf(conf: dict, cni_args: dict[str, str]) -> IpamConf:
    ipam = _ipam_section(conf)
    data_dir, name = parse_store_location(conf)
    resolv_conf = _path("ipam.resolvConf", ipam.get("resolvConf") or "")
    range_sets = build_range_sets(conf, ipam)
    return IpamConf(name, data_dir, resolv_conf, range_sets,
                    build_routes(ipam.get("routes")), build_requested(conf, cni_args))


def build_range_sets(conf: dict, ipam: dict) -> list[list[Range]]:
    runtime = conf.get("runtimeConfig")
    runtime_ranges = runtime.get("ipRanges") if isinstance(runtime, dict) else None
    if runtime_ranges:
        # The ipRanges capability replaces the configured ranges: the runtime
        # that manages the pools decides them (the reference 1.1.1 prepends).
        raw = _range_set_list("runtimeConfig.ipRanges", runtime_ranges)
    else:
        raw = []
        if ipam.get("subnet") is not None:
            legacy = {k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway")
                      if ipam.get(k) is not None}
            raw.append(("ipam", [legacy]))
        if ipam.get("ranges") is not None:
            raw.extend(_range_set_list("ipam.ranges", ipam["ranges"]))
    if not raw:
        raise skel.CniError(skel.INVALID_CONFIG, "ipam: no IP ranges specified",
                            "set ipam.ranges (or the legacy ipam.subnet)")
    sets = [_build_range_set(key, ranges) for key, ranges in raw]
    for i, a in enumerate(sets):
        for j in range(i + 1, len(sets)):
            if any(r1.overlaps(r2) for r1 in a for r2 in sets[j]):
                raise skel.CniError(skel.INVALID_CONFIG,
                                    f"{raw[i][0]}: range set {i} overlaps with range set {j}")
    return sets


def _range_set_list(key: str, value) -> list[tuple[str, list]]:
    if not isinstance(value, list):
        raise _invalid(key, value, "is not a list of range sets")
    out = []
    for i, rset in enumerate(value):
        if not isinstance(rset, list) or not rset:
            raise _invalid(f"{key}[{i}]", rset, "is not a non-empty list of ranges")
        out.append((f"{key}[{i}]", rset))
    return out


def _build_range_set(key: str, ranges: list) -> list[Range]:
    built: list[Range] = []
    for i, spec in enumerate(ranges):
        rkey = key if key == "ipam" else f"{key}[{i}]"
        built.append(_build_range(rkey, spec))
    if len({r.version for r in built}) > 1:
        raise skel.CniError(skel.INVALID_CONFIG, f"{key}: mixed address families in one range set")
    for i, a in enumerate(built):
        for b in built[i + 1:]:
            if a.overlaps(b):
                raise skel.CniError(skel.INVALID_CONFIG, f"{key}: ranges {a} and {b} overlap")
    return built


def _build_range(key: str, spec) -> Range:
    if not isinstance(spec, dict):
        raise _invalid(key, spec, "is not an object")
    subnet = spec.get("subnet")
    if subnet is None:
        raise skel.CniError(skel.INVALID_CONFIG, f"{key}.subnet: missing")
    try:
        net = allocator.parse_cidr(subnet)
    except ValueError as e:
        raise _invalid(f"{key}.subnet", subnet, str(e)) from None
    for field in ("rangeStart", "rangeEnd", "gateway"):
        value = spec.get(field)
        if value is None:
            continue
        try:
            version, _ = allocator.parse_ip(value)
        except ValueError as e:
            raise _invalid(f"{key}.{field}", value, str(e)) from None
        if version != net.version:
            raise _invalid(f"{key}.{field}", value, f"is not an IPv{net.version} address")
    try:
        return allocator.build_range(subnet, spec.get("rangeStart"), spec.get("rangeEnd"),
                                     spec.get("gateway"))
    except ValueError as e:
        raise skel.CniError(skel.INVALID_CONFIG, f"{key}: {e}") from None


def build_routes(routes) -> list[dict]:
    if routes is None:
        return []
    if not isinstance(routes, list):
        raise _invalid("ipam.routes", routes, "is not a list")
    out = []
    for i, route in enumerate(routes):
        key = f"ipam.routes[{i}]"
        if not isinstance(route, dict):
            raise _invalid(key, route, "is not an object")
        out.append(_build_route(key, route))
    return out


def _build_route(key: str, route: dict) -> dict:
    dst = route.get("dst")
    if not isinstance(dst, str) or "/" not in dst:
        raise _invalid(f"{key}.dst", dst, "is not a CIDR")
    try:
        # Go keeps the host bits of a route's dst as written ("10.2.3.1/24").
        out = {"dst": ipnet.ip_interface(dst).with_prefixlen}
    except ValueError:
        raise _invalid(f"{key}.dst", dst, "is not a CIDR") from None
    gw = route.get("gw")
    if gw is not None and gw != "":
        try:
            out["gw"] = allocator.format_ip(*allocator.parse_ip(gw))
        except ValueError as e:
            raise _invalid(f"{key}.gw", gw, str(e)) from None
    for field in _ROUTE_UINTS:
        value = route.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _invalid(f"{key}.{field}", value, "is not an unsigned integer")
        out[field] = value
    return out


def build_requested(conf: dict, cni_args: dict[str, str]) -> list[tuple[int, int]]:
    """Requested addresses, in order: CNI_ARGS IP=, args.cni.ips, runtimeConfig.ips."""
    out: list[tuple[int, int]] = []
    env_ips = cni_args.get("IP", "")
    for text in filter(None, (t.strip() for t in env_ips.split(","))):
        try:
            out.append(allocator.parse_ip(text))
        except ValueError as e:
            raise skel.CniError(skel.INVALID_ENV, f"CNI_ARGS IP: {json.dumps(text)} {e}") from None
    args = conf.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    if isinstance(cni, dict) and cni.get("ips") is not None:
        out.extend(_ip_list("args.cni.ips", cni["ips"]))
    runtime = conf.get("runtimeConfig")
    if isinstance(runtime, dict) and runtime.get("ips") is not None:
        out.extend(_ip_list("runtimeConfig.ips", runtime["ips"]))
    seen: set[tuple[int, int]] = set()
    return [ip for ip in out if not (ip in seen or seen.add(ip))]


def _ip_list(key: str, value) -> list[tuple[int, int]]:
    if not isinstance(value, list):
        raise _invalid(key, value, "is not a list of IP addresses")
    out = []
    for i, text in enumerate(value):
        # runtimeConfig.ips may carry a prefix ("10.0.0.5/24"): only the address counts.
        addr = text.split("/", 1)[0] if isinstance(text, str) else text
        try:
            out.append(allocator.parse_ip(addr))
        except ValueError as e:
            raise _invalid(f"{key}[{i}]", text, str(e)) from None
    return out
