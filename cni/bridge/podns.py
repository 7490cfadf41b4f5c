"""The pod's network namespace as each of kube-router-bridge's commands opens it."""
from __future__ import annotations

import sys

from cni import skel
from cni.skel import CniError
from lowlevel import netns

# libcni's words for CNI_NETNS naming the plugin's own namespace (code 8)
OWN_NETNS = "plugin's netns and netns from CNI_NETNS should not be the same"


def open_pod_netns(path: str) -> int:
    """ADD and CHECK's pod namespace; never the node's own (the pod's eth0, address and
    default route would land on the node)."""
    try:
        return netns.open_container_netns(path)
    except netns.NotANetns as exc:
        raise CniError(skel.UNKNOWN_CONTAINER, exc.strerror) from None
    except netns.NodeNetns as exc:
        raise CniError(skel.INVALID_NETNS, OWN_NETNS, exc.strerror) from None


def open_pod_netns_for_del(path: str) -> int | None:
    """DEL's pod namespace, or None when nothing of the pod's can be in it."""
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
