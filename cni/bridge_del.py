"""kube-router-bridge DEL: release the pod's addresses, its veth and its ipMasq rules.

Idempotent, as the spec asks: a missing netns, link, lease or chain is success.
"""
from __future__ import annotations

import errno
import os
import sys

from cni import bridge, netlink, skel
from cni.skel import CniError
from lowlevel import netns


def delete(req, conf: bridge.BridgeConf) -> None:
    if conf.ipam is not None:
        from cni import ipam
        ipam.exec_del(req, conf.ipam)
    pod_fd = _open_pod_netns(req.netns) if req.netns else None
    if pod_fd is not None:
        try:
            with netns.entered(pod_fd):
                pod = netlink.Netlink()
            with pod:
                link = pod.link_get(req.ifname)
                if link is not None:
                    _delete_link(pod, link)
        finally:
            os.close(pod_fd)
    if conf.ip_masq:
        from cni import ipmasq
        with ipmasq.cni_errors("ipMasq"):
            ipmasq.cleanup(conf.name, req.container_id)


def _open_pod_netns(path: str) -> int | None:
    """The pod's namespace, or None when nothing of the pod's can be in it."""
    try:
        return netns.open_container_netns(path)
    except netns.NotANetns:
        return None                       # the pod is gone, and its veth with it
    except netns.NodeNetns as exc:
        # ADD refuses this namespace, so no veth of ours is in it: the path is a reused
        # /proc/PID/ns/net of a pod that is gone, or a runtime's mix-up. Its CNI_IFNAME
        # is a node link. The lease and ipMasq rules are the container's: they go.
        sys.stderr.write(f"kube-router-bridge: DEL: {exc.strerror}: no link deleted\n")
        return None


def _delete_link(pod: netlink.Netlink, link: netlink.Link) -> None:
    # Deleting one end of a veth deletes both; a concurrent DEL may have won the race.
    try:
        pod.link_del(link.index, what=link.name)
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            raise CniError(skel.INTERNAL, str(exc)) from None
