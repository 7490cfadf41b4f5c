"""kube-router-bridge ADD: the pod's veth on the node bridge, addresses from IPAM, hairpin.

Results follow the reference ``bridge`` plugin of containernetworking/plugins.
Everything ADD does is on an undo stack, unwound when a later step fails.
"""
from __future__ import annotations

import errno
import os

from cni import ipam, netlink, skel
from cni.bridge.config import BridgeConf
from cni.bridge.podns import open_pod_netns
from cni.skel import CniError
from cni.undo import UndoStack
from lowlevel import ipnet, netns, sysctl

CONTAINER_IF = 2            # index of the container interface in the result's "interfaces"
IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x40, 0x08


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
                sysctl.write(f"net/ipv6/conf/{conf.bridge}/accept_ra", 0)
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
        sysctl.write(f"net/ipv6/conf/{link.name}/disable_ipv6", 0)
        if not conf.enable_dad:
            try:
                sysctl.write(f"net/ipv6/conf/{link.name}/accept_dad", 0)
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
    try:
        host.addr_add(br.index, gw, nodad=not conf.enable_dad, what=br.name)
    except OSError as exc:
        # Pods of one node are ADDed in parallel: another ADD may have put the same
        # gateway on the bridge between our listing and our add (the reference
        # plugin ignores EEXIST too). Anything else there is still an error.
        if exc.errno != errno.EEXIST or not any(
                a.interface == want for a in host.addr_list(br.index, family)):
            raise
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
        sysctl.write("net.ipv4.ip_forward", 1)
    if 6 in versions:
        sysctl.write("net.ipv6.conf.all.forwarding", 1)


def add(req, conf: BridgeConf) -> dict:
    """The attachment, and its result in the configuration's cniVersion."""
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
