"""kube-router-bridge: the pod's veth on a node bridge, addresses from IPAM, hairpin.

Configuration and results follow the reference ``bridge`` plugin of
containernetworking/plugins; the bridge defaults to ``kube-bridge``. Each
command imports only its own part (add, check, delete): the runtime execs the
plugin once per command, and every import costs start-up time.
"""
from __future__ import annotations

import sys

from cni import netlink, skel
from cni.bridge.config import parse_config
from cni.skel import CniError


def cmd_add(req) -> dict:
    conf = parse_config(req.conf, req.args)
    if conf.ipam is None:
        raise CniError(skel.INVALID_CONFIG, "missing 'ipam': the bridge plugin needs an IPAM plugin")
    from cni.bridge import add
    return add.add(req, conf)


def cmd_del(req) -> None:
    conf = parse_config(req.conf, req.args)
    from cni.bridge import delete
    delete.delete(req, conf)


def cmd_check(req) -> None:
    conf = parse_config(req.conf, req.args)
    from cni.bridge import check
    check.check(req, conf)


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
