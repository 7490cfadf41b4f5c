"""kube-router-bridge DEL: release the pod's addresses, its veth and its ipMasq rules.

Idempotent, as the spec asks: a missing netns, link, lease or chain is success.
"""
from __future__ import annotations

import errno
import os

from cni import netlink, skel
from cni.bridge.config import BridgeConf
from cni.bridge.podns import open_pod_netns_for_del
from cni.skel import CniError
from lowlevel import netns


def delete(req, conf: BridgeConf) -> None:
    if conf.ipam is not None:
        from cni import ipam
        ipam.exec_del(req, conf.ipam)
    pod_fd = open_pod_netns_for_del(req.netns) if req.netns else None
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


def _delete_link(pod: netlink.Netlink, link: netlink.Link) -> None:
    # Deleting one end of a veth deletes both; a concurrent DEL may have won the race.
    try:
        pod.link_del(link.index, what=link.name)
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            raise CniError(skel.INTERNAL, str(exc)) from None
