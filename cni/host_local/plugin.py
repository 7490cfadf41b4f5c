"""kube-router-host-local: IPAM from address ranges, leases kept on local disk.

Configuration, result and files on disk are those of the reference
host-local plugin, so either plugin can take over the other's leases.
"""
from __future__ import annotations

import sys

from cni import skel
from cni.host_local import allocator, config
from cni.host_local.store import LeaseStore, owned_by, stale_leases


def _leased(leases: dict[str, str], version: int) -> dict[int, str]:
    """{address: lease name} of one family; names that are not addresses are skipped."""
    out = {}
    for name in leases:
        try:
            v, addr = allocator.parse_ip(name)
        except ValueError:
            continue
        if v == version:
            out[addr] = name
    return out


def _parse_last(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        return allocator.parse_ip(text)
    except ValueError:
        return None  # a damaged hint only costs round-robin once


def _read_dns(path: str) -> dict:
    from cni.host_local import dns
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return dns.parse_resolv_conf(f.read())
    except OSError as e:
        raise skel.CniError(skel.IO_FAILURE, f"ipam.resolvConf: cannot read {path}",
                            e.strerror or str(e)) from None


def assign_requested(range_sets, requested) -> list[tuple[int, int] | None]:
    """Per range set, the requested address it contains (first wins), or None.

    Raises when a requested address falls in no range set or two land in one.
    """
    chosen: list[tuple[int, int] | None] = [None] * len(range_sets)
    for version, addr in requested:
        idx = next((i for i, rs in enumerate(range_sets)
                    if allocator.range_for(rs, version, addr)), None)
        text = allocator.format_ip(version, addr)
        if idx is None:
            raise skel.CniError(skel.INVALID_CONFIG, f"requested IP {text} is in no range set",
                                "ranges: " + "; ".join(allocator.range_set_str(rs)
                                                       for rs in range_sets))
        if chosen[idx] is not None:
            raise skel.CniError(skel.INVALID_CONFIG,
                                f"requested IPs {allocator.format_ip(*chosen[idx])} and {text}"
                                f" are both in range set {idx}",
                                "one address is allocated per range set")
        chosen[idx] = (version, addr)
    return chosen


def _allocate_one(store: LeaseStore, req: skel.Request, idx: int, range_set,
                  wanted: tuple[int, int] | None, leases: dict[str, str]) -> tuple[dict, str]:
    """Reserve one address of ``range_set``: (ips entry, lease name)."""
    version = range_set[0].version
    taken = _leased(leases, version)
    rs_text = allocator.range_set_str(range_set)
    if wanted is not None:
        r = allocator.range_for(range_set, *wanted)
        name = allocator.format_ip(*wanted)
        if wanted[1] == r.gateway:
            raise skel.CniError(skel.INVALID_CONFIG,
                                f"failed to allocate for range {idx}: requested ip {name}"
                                " is subnet's gateway")
        if wanted[1] in taken or not store.reserve(name, req.container_id, req.ifname, idx):
            raise skel.CniError(skel.TRY_AGAIN_LATER,
                                f"failed to allocate for range {idx}: requested IP address"
                                f" {name} is not available in range set {rs_text}",
                                f"leased to {leases.get(name, 'another attachment')!r}")
        return _ip_entry(version, wanted[1], r), name
    mine = [n for n in owned_by(leases, req.container_id, req.ifname)
            if (p := _parse_last(n)) and allocator.range_for(range_set, *p)]
    if mine:
        raise skel.CniError(skel.INTERNAL, f"failed to allocate for range {idx}: {mine[0]} has"
                            f" been allocated to {req.container_id}, duplicate allocation is"
                            " not allowed")
    last = _parse_last(store.last_reserved(idx))
    last_addr = last[1] if last and last[0] == version else None
    taken_set = set(taken)
    while True:
        found = allocator.next_free(range_set, taken_set, last_addr)
        if found is None:
            raise skel.CniError(skel.TRY_AGAIN_LATER,
                                f"failed to allocate for range {idx}: no IP addresses"
                                f" available in range set: {rs_text}",
                                f"{len(taken_set)} leases in {store.dir}")
        addr, r = found
        name = allocator.format_ip(version, addr)
        if store.reserve(name, req.container_id, req.ifname, idx):
            return _ip_entry(version, addr, r), name
        taken_set.add(addr)  # a lease file we had not listed (written without the lock)


def _ip_entry(version: int, addr: int, r: allocator.Range) -> dict:
    entry = {"address": f"{allocator.format_ip(version, addr)}/{r.prefixlen}"}
    if r.gateway is not None:
        entry["gateway"] = allocator.format_ip(version, r.gateway)
    return entry


def cmd_add(req: skel.Request) -> dict:
    conf = config.parse_ipam_conf(req.conf, req.args)
    wanted = assign_requested(conf.range_sets, conf.requested)
    result: dict = {"cniVersion": "1.0.0", "ips": [], "dns": {}}
    if conf.resolv_conf:
        result["dns"] = _read_dns(conf.resolv_conf)
    with LeaseStore(conf.data_dir, conf.name) as store:
        leases = store.read_leases()
        reserved: list[str] = []
        try:
            for idx, range_set in enumerate(conf.range_sets):
                entry, name = _allocate_one(store, req, idx, range_set, wanted[idx], leases)
                reserved.append(name)
                result["ips"].append(entry)
        except BaseException:
            store.release(reserved)  # a failed ADD leaves no lease behind
            raise
    if conf.routes:
        result["routes"] = conf.routes
    return result


def cmd_del(req: skel.Request) -> None:
    data_dir, name = config.parse_store_location(req.conf)
    with LeaseStore(data_dir, name) as store:
        store.release(owned_by(store.read_leases(), req.container_id, req.ifname))


def cmd_check(req: skel.Request) -> None:
    data_dir, name = config.parse_store_location(req.conf)
    with LeaseStore(data_dir, name) as store:
        mine = set(owned_by(store.read_leases(), req.container_id, req.ifname))
    if not mine:
        raise skel.CniError(skel.INTERNAL, "host-local: failed to find address added by"
                            f" container {req.container_id}", f"interface {req.ifname}")
    for ip in (req.prev_result or {}).get("ips", []):
        addr = ip["address"].split("/", 1)[0]
        try:
            lease_name = allocator.format_ip(*allocator.parse_ip(addr))
        except ValueError:
            raise skel.CniError(skel.DECODE_FAILURE,
                                f"prevResult: {ip['address']!r} is not an address") from None
        if lease_name not in mine:
            raise skel.CniError(skel.INTERNAL, f"host-local: {lease_name} is not leased to"
                                f" container {req.container_id} interface {req.ifname}")


def cmd_gc(req: skel.Request) -> None:
    valid = skel.valid_attachments(req.conf)
    data_dir, name = config.parse_store_location(req.conf)
    with LeaseStore(data_dir, name) as store:
        leases = store.read_leases()
        store.release([n for n in stale_leases(leases, valid) if _parse_last(n)])


def cmd_status(req: skel.Request) -> None:
    conf = config.parse_ipam_conf(req.conf, {})
    with LeaseStore(conf.data_dir, conf.name) as store:
        leases = store.read_leases()
    for idx, range_set in enumerate(conf.range_sets):
        taken = set(_leased(leases, range_set[0].version))
        if allocator.free_count(range_set, taken) <= 0:
            raise skel.CniError(skel.NOT_AVAILABLE, f"range set {idx} is exhausted",
                                allocator.range_set_str(range_set))


def main() -> int:
    return skel.run(sys.modules[__name__])
