"""cni.netlink and lowlevel.netns against the real kernel, cross-checked with iproute2 and packets."""
import errno
import json
import os

import pytest

from cni import netlink
from lowlevel import netns, sysctl


def nl_in(ns) -> netlink.Netlink:
    """A netlink socket bound to ``ns`` (opened by a thread inside it)."""
    return ns.call(netlink.Netlink)


def ip_json(ns, *args):
    return json.loads(ns.exec(["ip", "-j", *args]).stdout or "[]")


def test_bridge_veth_into_other_namespace_and_packets(netns_factory, host_ns):
    pod = netns_factory("pod")
    host, podnl = nl_in(host_ns), nl_in(pod)
    fd = netns.open_netns(pod.path)
    try:
        host.bridge_add("kbr0", mtu=1400)
        host.veth_add("vethtest01", "eth0", fd, mtu=1400, peer_mac="02:11:22:33:44:55")
    finally:
        os.close(fd)
    br, veth = host.link_get("kbr0"), host.link_get("vethtest01")
    cont = podnl.link_get("eth0")
    assert (br.kind, br.mtu, veth.kind, cont.kind) == ("bridge", 1400, "veth", "veth")
    assert cont.mac == "02:11:22:33:44:55" and cont.mtu == 1400
    assert cont.peer_index == veth.index          # IFLA_LINK names the peer across namespaces
    assert host.link_get("eth0") is None and podnl.link_get("vethtest01") is None
    assert host.link_get(index=br.index).name == "kbr0"

    host.link_set(br.index, up=True)
    host.link_set(veth.index, master=br.index, up=True)
    assert host.link_get("vethtest01").master == br.index
    assert ip_json(host_ns, "link", "show", "vethtest01")[0]["master"] == "kbr0"

    host.addr_add(br.index, "10.77.0.1/24")
    podnl.addr_add(cont.index, "10.77.0.2/24")
    podnl.link_set(cont.index, up=True)
    podnl.route_add("0.0.0.0/0", "10.77.0.1", cont.index)
    assert [str(a.interface) for a in podnl.addr_list(cont.index, netlink.AF_INET)] == ["10.77.0.2/24"]
    routes = ip_json(pod, "route", "show", "default")
    assert routes[0]["gateway"] == "10.77.0.1" and routes[0]["dev"] == "eth0"
    assert any(r.gateway and str(r.gateway) == "10.77.0.1" and r.dst.prefixlen == 0
               for r in podnl.route_list(netlink.AF_INET))
    pod.exec("busybox ping -c1 -W2 10.77.0.1")
    host_ns.exec("busybox ping -c1 -W2 10.77.0.2")

    podnl.route_del("0.0.0.0/0", "10.77.0.1", cont.index)
    assert ip_json(pod, "route", "show", "default") == []
    podnl.addr_del(cont.index, "10.77.0.2/24")
    assert podnl.addr_list(cont.index, netlink.AF_INET) == []
    host.link_del(veth.index)
    assert podnl.link_get("eth0") is None           # deleting one end deletes both
    for nl in (host, podnl):
        nl.close()


def test_hairpin_mtu_mac_promisc_read_back_by_iproute2(netns_factory, host_ns):
    pod = netns_factory("pod")
    host = nl_in(host_ns)
    fd = netns.open_netns(pod.path)
    host.bridge_add("kbr1")
    host.veth_add("vethtest02", "eth0", fd)
    os.close(fd)
    br, veth = host.link_get("kbr1"), host.link_get("vethtest02")
    assert host.brport_hairpin(veth.index) is None       # not a bridge port yet
    host.link_set(veth.index, master=br.index, mtu=1300, mac="02:aa:bb:cc:dd:ee", promisc=True)
    host.brport_set_hairpin(veth.index, True)
    sysfs = host_ns.exec("cat /sys/class/net/vethtest02/brport/hairpin_mode").stdout.strip()
    assert sysfs == "1" and host.brport_hairpin(veth.index) is True
    link = ip_json(host_ns, "-d", "link", "show", "vethtest02")[0]
    assert link["mtu"] == 1300 and link["address"] == "02:aa:bb:cc:dd:ee"
    assert "PROMISC" in link["flags"]
    assert host.link_get("vethtest02").promisc
    host.brport_set_hairpin(veth.index, False)
    assert host_ns.exec("cat /sys/class/net/vethtest02/brport/hairpin_mode").stdout.strip() == "0"
    assert host.brport_hairpin(veth.index) is False
    host.close()


def test_ipv6_nodad_address_is_usable_at_once(netns_factory):
    a, b = netns_factory("a"), netns_factory("b")
    anl, bnl = nl_in(a), nl_in(b)
    fd = netns.open_netns(b.path)
    anl.veth_add("v6a", "v6b", fd)
    os.close(fd)
    ia, ib = anl.link_get("v6a").index, bnl.link_get("v6b").index
    anl.addr_add(ia, "fd00:77::1/64", nodad=True)
    bnl.addr_add(ib, "fd00:77::2/64", nodad=True)
    anl.link_set(ia, up=True)
    bnl.link_set(ib, up=True)
    addr = [x for x in anl.addr_list(ia, netlink.AF_INET6) if x.scope == 0][0]
    assert addr.flags & netlink.IFA_F_NODAD and str(addr.interface) == "fd00:77::1/64"
    bnl.route_add("::/0", "fd00:77::1", ib)
    assert ip_json(b, "-6", "route", "show", "default")[0]["gateway"] == "fd00:77::1"
    b.exec("busybox ping6 -c1 -W2 fd00:77::1")
    anl.close(), bnl.close()


def test_errors_carry_errno_and_name_operation_and_object(host_ns):
    host = nl_in(host_ns)
    host.bridge_add("kbr3")
    with pytest.raises(OSError) as info:
        host.bridge_add("kbr3")
    assert info.value.errno == errno.EEXIST and "add bridge kbr3" in str(info.value)
    idx = host.link_get("kbr3").index
    host.addr_add(idx, "10.5.0.1/24", what="kbr3")
    with pytest.raises(FileExistsError) as info:
        host.addr_add(idx, "10.5.0.1/24", what="kbr3")
    assert "add address 10.5.0.1/24 on kbr3" in str(info.value)
    with pytest.raises(OSError) as info:
        host.link_del(999999, what="nothing")
    assert info.value.errno == errno.ENODEV and "delete link nothing" in str(info.value)
    assert host.link_get("no-such-link") is None
    host.close()


def test_netns_enter_sysctl_and_bad_paths(netns_factory, tmp_path):
    pod = netns_factory("pod")
    fd = netns.open_netns(pod.path)
    before = os.readlink("/proc/thread-self/ns/net")
    try:
        with netns.entered(fd):
            assert os.readlink("/proc/thread-self/ns/net") != before
            sysctl.write("net.ipv4.ip_forward", 1)
            assert sysctl.read("net/ipv4/ip_forward") == "1"
    finally:
        os.close(fd)
    assert os.readlink("/proc/thread-self/ns/net") == before
    assert pod.exec("sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"
    with pytest.raises(netns.NotANetns) as info:
        netns.open_netns(str(tmp_path / "missing"))
    assert info.value.errno == errno.ENOENT and str(tmp_path / "missing") in str(info.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(netns.NotANetns) as info:
        netns.open_netns(str(tmp_path / "file"))
    assert "not a network namespace" in str(info.value)
