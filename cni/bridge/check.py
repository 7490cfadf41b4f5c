"""kube-router-bridge CHECK: the attachment in prevResult is still what ADD made.

The bridge, the host veth on it (with the configured hairpin mode), the pod's
interface as its peer, and every address and route of prevResult in the pod.
"""
from __future__ import annotations

import os

from cni import netlink, skel
from cni.bridge.config import BridgeConf
from cni.bridge.podns import open_pod_netns
from cni.skel import CniError
from lowlevel import ipnet, netns


def check(req, conf: BridgeConf) -> None:
    prev = req.prev_result
    if not prev:
        raise CniError(skel.INVALID_CONFIG, "required prevResult missing")
    pod_fd = open_pod_netns(req.netns)
    try:
        if conf.ipam is not None:
            from cni import ipam
            ipam.exec_check(req, conf.ipam)
        cont, br_if, veth_if = _prev_interfaces(prev, req.ifname, conf.bridge)
        with netlink.Netlink() as host:
            _, veth = _check_host(host, conf, br_if, veth_if)
            with netns.entered(pod_fd):
                pod = netlink.Netlink()
            with pod:
                _check_pod(pod, req.ifname, cont, veth, prev)
    except OSError as exc:
        raise CniError(skel.INTERNAL, str(exc)) from None
    finally:
        os.close(pod_fd)


def _prev_interfaces(prev: dict, ifname: str, bridge_name: str):
    ifaces = prev.get("interfaces", [])
    cont = next((i for i in ifaces if i.get("sandbox") and i["name"] == ifname), None)
    br_if = next((i for i in ifaces if i["name"] == bridge_name and not i.get("sandbox")), None)
    veth_if = next((i for i in ifaces if not i.get("sandbox") and i is not br_if), None)
    if cont is None or br_if is None or veth_if is None:
        raise CniError(skel.INTERNAL, "prevResult lacks the bridge, host veth or container interface")
    return cont, br_if, veth_if


def _fail(msg: str) -> CniError:
    return CniError(skel.INTERNAL, msg)


def _check_host(host, conf: BridgeConf, br_if: dict, veth_if: dict):
    br = host.link_get(br_if["name"])
    if br is None or br.kind != "bridge":
        raise _fail(f"bridge {br_if['name']!r} not found")
    if br_if.get("mac") and br_if["mac"] != br.mac:
        raise _fail(f"bridge {br.name} has MAC {br.mac}, prevResult says {br_if['mac']}")
    veth = host.link_get(veth_if["name"])
    if veth is None or veth.kind != "veth":
        raise _fail(f"host veth {veth_if['name']!r} not found")
    if veth.master != br.index:
        raise _fail(f"host veth {veth.name} is not attached to bridge {br.name}")
    hairpin = host.brport_hairpin(veth.index)
    if bool(hairpin) != conf.hairpin_mode:
        raise _fail(f"hairpin mode on {veth.name} is {'on' if hairpin else 'off'}, "
                    f"configured {'on' if conf.hairpin_mode else 'off'}")
    return br, veth


def _check_pod(pod, ifname: str, cont_if: dict, veth: netlink.Link, prev: dict) -> None:
    link = pod.link_get(ifname)
    if link is None or link.kind != "veth":
        raise _fail(f"container interface {ifname!r} not found")
    if cont_if.get("mac") and cont_if["mac"] != link.mac:
        raise _fail(f"container interface {ifname} has MAC {link.mac}, prevResult says {cont_if['mac']}")
    if link.peer_index != veth.index:
        raise _fail(f"container interface {ifname} is not the peer of {veth.name}")
    have = {a.interface for a in pod.addr_list(link.index)}
    for ipc in prev.get("ips", []):
        want = ipnet.ip_interface(ipc["address"])
        if want not in have:
            raise _fail(f"address {want} not found on {ifname}")
    routes = {(r.dst, r.gateway) for r in pod.route_list() if r.oif == link.index}
    for route in prev.get("routes", []):
        dst = ipnet.ip_network(route["dst"], strict=False)
        gw = ipnet.ip_address(route["gw"]) if route.get("gw") else None
        if not any(d == dst and (gw is None or g == gw) for d, g in routes):
            raise _fail(f"route {dst}{f' via {gw}' if gw else ''} not found in the container")
