"""kube-router-bridge: the pod's veth on a node bridge, addresses from IPAM, hairpin.

Configuration and results follow the reference ``bridge`` plugin of
containernetworking/plugins; the bridge defaults to ``kube-bridge``.
"""
from __future__ import annotations

import os
import sys

from cni import netlink, skel
from cni.record import Record
from cni.skel import CniError
from cni.undo import UndoStack
from lowlevel import ipnet, netns

DEFAULT_BRIDGE = "kube-bridge"
CONTAINER_IF = 2            # index of the container interface in the result's "interfaces"
IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x40, 0x08
# libcni's words for CNI_NETNS naming the plugin's own namespace (code 8)
OWN_NETNS = "plugin's netns and netns from CNI_NETNS should not be the same"


class BridgeConf(Record):
    __slots__ = ("name", "cni_version", "bridge", "is_gateway", "is_default_gateway",
                 "force_address", "ip_masq", "mtu", "hairpin_mode", "promisc_mode", "vlan",
                 "enable_dad", "ipam", "dns", "mac")


_BOOLS = {"isGateway": False, "isDefaultGateway": False, "forceAddress": False, "ipMasq": False,
          "hairpinMode": False, "promiscMode": False, "enabledad": False, "macspoofchk": False}


def _invalid(key: str, value) -> CniError:
    return CniError(skel.INVALID_CONFIG, f"invalid value for {key!r}: {value!r}")


def _int_field(conf: dict, key: str, low: int, high: int) -> int:
    value = conf.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(key, value)
    return value


def _mac_field(key: str, value) -> str:
    try:
        raw = netlink.mac_bytes(value)
    except (ValueError, AttributeError):
        raise _invalid(key, value) from None
    if len(raw) != 6 or value.count(":") != 5:
        raise _invalid(key, value)
    return netlink.mac_str(raw)


def is_ifname(name) -> bool:
    """A link name the kernel takes (dev_valid_name): 1..15 bytes, no '/', ':', space, NUL
    (the C string would end at a NUL, naming another link); a lone surrogate cannot encode."""
    if not isinstance(name, str) or name in (".", "..") or not name.isprintable():
        return False
    try:
        return 0 < len(name.encode()) < 16 and not any(c in "/:" or c.isspace() for c in name)
    except UnicodeEncodeError:
        return False


def _pod_mac(conf: dict, cni_args: dict) -> str | None:
    # Lowest to highest priority, as the reference: CNI_ARGS MAC, args.cni.mac, runtimeConfig.mac.
    mac = None
    if cni_args.get("MAC"):
        mac = _mac_field("MAC", cni_args["MAC"])
    args = conf.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    if isinstance(cni, dict) and cni.get("mac"):
        mac = _mac_field("args.cni.mac", cni["mac"])
    runtime = conf.get("runtimeConfig")
    if isinstance(runtime, dict) and runtime.get("mac"):
        mac = _mac_field("runtimeConfig.mac", runtime["mac"])
    return mac


def parse_config(data: bytes | dict, cni_args: dict | None = None) -> BridgeConf:
    """The plugin's configuration; CniError (code 7 naming key and value) when invalid."""
    if isinstance(data, (bytes, str)):
        from cni import fastjson as json
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise CniError(skel.DECODE_FAILURE, f"failed to parse network configuration: {exc}")
    if not isinstance(data, dict):
        raise CniError(skel.DECODE_FAILURE, "network configuration is not a JSON object")
    version = data.get("cniVersion", "")
    if version not in skel.SUPPORTED_VERSIONS:
        raise CniError(skel.INCOMPATIBLE_VERSION, f"unsupported cniVersion {version!r}",
                       f"supported: {', '.join(skel.SUPPORTED_VERSIONS)}")
    flags = {}
    for key, default in _BOOLS.items():
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise _invalid(key, value)
        flags[key] = value
    if flags["macspoofchk"]:
        raise CniError(skel.UNSUPPORTED_FIELD, "'macspoofchk' is not supported")
    if flags["hairpinMode"] and flags["promiscMode"]:
        raise CniError(skel.INVALID_CONFIG,
                       "cannot set 'hairpinMode' and 'promiscMode' at the same time")
    vlan = _int_field(data, "vlan", 0, 4094)
    if vlan and (flags["isGateway"] or flags["isDefaultGateway"]):
        # The reference puts the gateway on a VLAN sub-interface of the bridge; we do not.
        raise CniError(skel.UNSUPPORTED_FIELD, "'vlan' together with 'isGateway' is not supported")
    bridge = data.get("bridge") or DEFAULT_BRIDGE
    if not is_ifname(bridge):
        raise _invalid("bridge", bridge)
    for key in ("ipam", "dns"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise _invalid(key, data[key])
    ipam_conf = data.get("ipam") or None
    if ipam_conf is not None and not isinstance(ipam_conf.get("type"), str):
        raise _invalid("ipam.type", ipam_conf.get("type"))
    return BridgeConf(
        name=data.get("name", ""), cni_version=version, bridge=bridge,
        is_gateway=flags["isGateway"] or flags["isDefaultGateway"],
        is_default_gateway=flags["isDefaultGateway"], force_address=flags["forceAddress"],
        ip_masq=flags["ipMasq"], mtu=_int_field(data, "mtu", 0, 65535),
        hairpin_mode=flags["hairpinMode"], promisc_mode=flags["promiscMode"],
        vlan=vlan, enable_dad=flags["enabledad"],
        ipam=ipam_conf, dns=data.get("dns") or None, mac=_pod_mac(data, cni_args or {}))


# ---- ADD --------------------------------------------------------------------


def ensure_bridge(host: netlink.Netlink, conf: BridgeConf) -> netlink.Link:
    br = host.link_get(conf.bridge)
    if br is None:
        try:
            host.bridge_add(conf.bridge, conf.mtu, vlan_filtering=bool(conf.vlan))
        except FileExistsError:
            pass                       # another ADD created it meanwhile
        else:
            # We own the bridge's routes: router advertisements must not add any.
            try:
                netns.sysctl_write(f"net/ipv6/conf/{conf.bridge}/accept_ra", 0)
            except OSError:
                pass                   # no IPv6 in this namespace
        br = host.link_get(conf.bridge)
    if br is None or br.kind != "bridge":
        raise CniError(skel.INVALID_CONFIG, f"{conf.bridge!r} already exists but is not a bridge")
    if not br.up or conf.promisc_mode and not br.promisc:
        host.link_set(br.index, up=True, promisc=True if conf.promisc_mode else None,
                      what=conf.bridge)
    return br


def ensure_veth(host: netlink.Netlink, pod: netlink.Netlink, pod_fd: int, ifname: str,
                conf: BridgeConf) -> str:
    """A veth: a random ``veth%08x`` end here, ``ifname`` in the pod; the host end's name."""
    for _ in range(10):
        name = "veth" + os.urandom(4).hex()
        try:
            host.veth_add(name, ifname, pod_fd, conf.mtu, conf.mac)
            return name
        except FileExistsError:
            if pod.link_get(ifname) is not None:
                raise CniError(skel.INTERNAL,
                               f"container veth name provided ({ifname}) already exists") from None
    raise CniError(skel.INTERNAL, "failed to find a free host veth name")


def plan_gateways(result: dict, conf: BridgeConf) -> list[str]:
    """Fill gateways, interface indexes and default routes into ``result`` as the reference
    does; return the gateway addresses (with prefix) the bridge must carry."""
    bridge_addrs, default_done = [], set()
    routes = result.setdefault("routes", [])
    for ipc in result["ips"]:
        iface = ipnet.ip_interface(ipc["address"])
        ipc["interface"] = CONTAINER_IF
        if not ipc.get("gateway") and conf.is_gateway:
            ipc["gateway"] = str(iface.network.network_address + 1)
        default = "0.0.0.0/0" if iface.version == 4 else "::/0"
        if conf.is_default_gateway and iface.version not in default_done:
            if not any(r.get("gw") and _same_net(r["dst"], default) for r in routes):
                routes.append({"dst": default, "gw": ipc.get("gateway")})
            default_done.add(iface.version)
        if conf.is_gateway:
            bridge_addrs.append(f"{ipc['gateway']}/{iface.network.prefixlen}")
    return bridge_addrs


def _same_net(a: str, b: str) -> bool:
    return ipnet.ip_network(a, strict=False) == ipnet.ip_network(b, strict=False)


def configure_pod(pod: netlink.Netlink, link: netlink.Link, result: dict, conf: BridgeConf) -> None:
    """Addresses and routes inside the pod (the thread is in the pod's namespace)."""
    ips = [ipnet.ip_interface(ipc["address"]) for ipc in result["ips"]]
    if any(ip.version == 6 for ip in ips):
        netns.sysctl_write(f"net/ipv6/conf/{link.name}/disable_ipv6", 0)
        if not conf.enable_dad:
            try:
                netns.sysctl_write(f"net/ipv6/conf/{link.name}/accept_dad", 0)
            except OSError:
                pass
    for ip in ips:
        pod.addr_add(link.index, str(ip), nodad=not conf.enable_dad, what=link.name)
    pod.link_set(link.index, up=True, what=link.name)
    gateways = {}
    for ipc, ip in zip(result["ips"], ips):
        if ipc.get("gateway"):
            gateways.setdefault(ip.version, ipc["gateway"])
    for route in result.get("routes", []):
        version = ipnet.ip_network(route["dst"], strict=False).version
        pod.route_add(route["dst"], route.get("gw") or gateways.get(version), link.index)
    if conf.enable_dad and any(ip.version == 6 for ip in ips):
        _settle_addresses(pod, link)


def _settle_addresses(pod: netlink.Netlink, link: netlink.Link, timeout: float = 10.0) -> None:
    import time
    deadline = time.monotonic() + timeout
    while True:
        flags = [a.flags for a in pod.addr_list(link.index, netlink.AF_INET6) if a.scope == 0]
        if any(f & IFA_F_DADFAILED for f in flags):
            raise CniError(skel.INTERNAL, f"duplicate address detected on {link.name}")
        if not any(f & IFA_F_TENTATIVE for f in flags):
            return
        if time.monotonic() > deadline:
            raise CniError(skel.INTERNAL, f"addresses on {link.name} still tentative after {timeout}s")
        time.sleep(0.05)


def ensure_gateway_addr(host: netlink.Netlink, br: netlink.Link, gw: str, conf: BridgeConf) -> None:
    """The gateway address on the bridge, with the reference's forceAddress semantics."""
    want = ipnet.ip_interface(gw)
    family = netlink.AF_INET if want.version == 4 else netlink.AF_INET6
    for addr in host.addr_list(br.index, family):
        have = addr.interface
        if have == want:
            return
        # One IPv4 address per bridge; IPv6 ones may coexist when their subnets do not overlap.
        if want.version == 4 or want.ip in have.network or have.ip in want.network:
            if not conf.force_address:
                raise CniError(skel.INTERNAL,
                               f"{br.name!r} already has an IP address different from {gw}")
            host.addr_del(br.index, str(have), what=br.name)
    host.addr_add(br.index, gw, nodad=not conf.enable_dad, what=br.name)
    # Pin the bridge's MAC to the one it had before this pod's port joined: a bridge
    # with a kernel-chosen MAC takes the lowest port MAC, changing as pods come and go,
    # and drops to 00:00:00:00:00:00 (which cannot be set back) when its last port leaves.
    mac = br.mac
    if mac == "00:00:00:00:00:00":
        mac = netlink.mac_str(bytes([0x02]) + os.urandom(5))   # locally administered
    host.link_set(br.index, mac=mac, what=br.name)


def ensure_ip_forward(ips) -> None:
    versions = {ipnet.ip_interface(ipc["address"]).version for ipc in ips}
    if 4 in versions:
        netns.sysctl_write("net.ipv4.ip_forward", 1)
    if 6 in versions:
        netns.sysctl_write("net.ipv6.conf.all.forwarding", 1)


def open_pod_netns(path: str) -> int:
    """ADD and CHECK's pod namespace; never the node's own (the pod's eth0, address and
    default route would land on the node)."""
    try:
        return netns.open_container_netns(path)
    except netns.NotANetns as exc:
        raise CniError(skel.UNKNOWN_CONTAINER, exc.strerror) from None
    except netns.NodeNetns as exc:
        raise CniError(skel.INVALID_NETNS, OWN_NETNS, exc.strerror) from None


def cmd_add(req) -> dict:
    conf = parse_config(req.conf, req.args)
    if conf.ipam is None:
        raise CniError(skel.INVALID_CONFIG, "missing 'ipam': the bridge plugin needs an IPAM plugin")
    pod_fd = open_pod_netns(req.netns)
    try:
        with netlink.Netlink() as host, UndoStack() as undo:
            with netns.entered(pod_fd):
                pod = netlink.Netlink()
            undo.callback(pod.close)
            try:
                result = _add(req, conf, host, pod, pod_fd, undo)
            except OSError as exc:
                raise CniError(skel.INTERNAL, str(exc)) from None
            pod.close()
            undo.commit()
            return result
    finally:
        os.close(pod_fd)


def _add(req, conf: BridgeConf, host, pod, pod_fd: int, undo: UndoStack) -> dict:
    from cni import ipam
    br = ensure_bridge(host, conf)
    result = ipam.exec_add(req, conf.ipam)
    undo.callback(ipam.exec_del, req, conf.ipam)
    if not result.get("ips"):
        raise CniError(skel.INTERNAL, "IPAM plugin returned missing IP config")
    host_name = ensure_veth(host, pod, pod_fd, req.ifname, conf)
    host_veth = host.link_get(host_name)
    undo.callback(host.link_del, host_veth.index)
    host.link_set(host_veth.index, master=br.index, up=True, what=host_name)
    if conf.hairpin_mode:
        host.brport_set_hairpin(host_veth.index, True, what=host_name)
    if conf.vlan:
        host.brport_set_vlan(host_veth.index, conf.vlan, what=host_name)
    bridge_addrs = plan_gateways(result, conf)
    cont = pod.link_get(req.ifname)
    if any(ipnet.ip_interface(i["address"]).version == 6 for i in result["ips"]):
        with netns.entered(pod_fd):       # the sysctl files resolve in the opener's namespace
            configure_pod(pod, cont, result, conf)
    else:
        configure_pod(pod, cont, result, conf)
    if conf.is_gateway:
        for gw in bridge_addrs:
            ensure_gateway_addr(host, br, gw, conf)
        ensure_ip_forward(result["ips"])
    if conf.ip_masq:
        _masq_setup(req, conf, result, undo)
    br = host.link_get(index=br.index)   # its MAC may change as ports and addresses arrive
    result["interfaces"] = [
        {"name": br.name, "mac": br.mac},
        {"name": host_name, "mac": host_veth.mac},
        {"name": cont.name, "mac": cont.mac, "sandbox": req.netns}]
    if conf.dns:
        result["dns"] = conf.dns
    result["cniVersion"] = conf.cni_version
    return result


def _masq_setup(req, conf: BridgeConf, result: dict, undo: UndoStack) -> None:
    from cni import ipmasq
    undo.callback(ipmasq.cleanup, conf.name, req.container_id)
    with ipmasq.cni_errors("ipMasq"):
        ipmasq.ensure(conf.name, req.container_id, [ipc["address"] for ipc in result["ips"]])


# ---- DEL --------------------------------------------------------------------


def cmd_del(req) -> None:
    from cni import bridge_del
    bridge_del.delete(req, parse_config(req.conf, req.args))


# ---- CHECK ------------------------------------------------------------------


def cmd_check(req) -> None:
    from cni import bridge_check
    bridge_check.check(req, parse_config(req.conf, req.args))


# ---- GC and STATUS (CNI 1.1) ------------------------------------------------


def cmd_gc(req) -> None:
    conf = parse_config(req.conf, req.args)
    valid_ids = {cid for cid, _ in skel.valid_attachments(req.conf)}
    if conf.ipam is not None:
        from cni import ipam
        ipam.exec_gc(req, conf.ipam)
    from cni import ipmasq
    with ipmasq.cni_errors("ipMasq garbage collection"):
        ipmasq.cleanup_stale(conf.name, valid_ids, required=conf.ip_masq)


def cmd_status(req) -> None:
    """Ready for ADDs: the bridge name is free or a bridge, and IPAM is ready."""
    conf = parse_config(req.conf, req.args)
    if conf.ipam is None:
        raise CniError(skel.INVALID_CONFIG, "missing 'ipam': the bridge needs an IPAM plugin")
    try:
        with netlink.Netlink() as host:
            link = host.link_get(conf.bridge)
    except OSError as exc:
        raise CniError(skel.NOT_AVAILABLE, f"cannot read links: {exc}") from None
    if link is not None and link.kind != "bridge":
        raise CniError(skel.NOT_AVAILABLE, f"{conf.bridge!r} exists but is not a bridge",
                       f"it is a {link.kind or 'device without a kind'}")
    from cni import ipam
    ipam.exec_status(req, conf.ipam)


def main() -> int:
    return skel.run(sys.modules[__name__])
