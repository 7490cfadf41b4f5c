"""The bridge's gateway address when pods of a node are ADDed in parallel (a stateful fake of
the node's addresses: one ADD lists, another adds the gateway, then the first adds it)."""
import errno
import json

import pytest

from cni import netlink
from cni.bridge import add, config
from lowlevel import ipnet


class Host:
    """The bridge's addresses; ``racer`` adds one right after the first listing."""

    def __init__(self, racer=None):
        self.addresses: list[str] = []
        self.racer = racer

    def addr_list(self, index, family):
        listed = [netlink.Address(index, ipnet.ip_interface(a), 0, 0) for a in self.addresses]
        if self.racer:
            self.addresses.append(self.racer)
            self.racer = None
        return listed

    def addr_add(self, index, cidr, nodad=False, what=""):
        if cidr in self.addresses:
            raise OSError(errno.EEXIST, f"add address {cidr} on {what}: File exists")
        self.addresses.append(cidr)

    def addr_del(self, index, cidr, what=""):
        self.addresses.remove(cidr)

    def link_set(self, index, **changes):
        pass


def bridge_conf():
    return config.parse_config(json.dumps({
        "cniVersion": "1.0.0", "name": "kubernetes", "type": "kube-router-bridge",
        "ipam": {"type": "kube-router-host-local", "subnet": "10.1.0.0/24"}}).encode())


BRIDGE = netlink.Link(index=3, name="kube-bridge", flags=0, mtu=1500, mac="02:00:00:00:00:01",
                      master=0, kind="bridge", peer_index=0)


def test_the_same_gateway_added_meanwhile_by_another_add_is_fine():
    host = Host(racer="10.1.0.1/24")
    add.ensure_gateway_addr(host, BRIDGE, "10.1.0.1/24", bridge_conf())
    assert host.addresses == ["10.1.0.1/24"]


def test_eexist_for_an_address_that_is_not_the_gateway_is_still_an_error():
    host = Host()

    def refuse(index, cidr, nodad=False, what=""):
        host.addresses.append("10.1.0.2/24")      # something else holds the bridge now
        raise OSError(errno.EEXIST, f"add address {cidr} on {what}: File exists")
    host.addr_add = refuse
    with pytest.raises(OSError, match="File exists"):
        add.ensure_gateway_addr(host, BRIDGE, "10.1.0.1/24", bridge_conf())
