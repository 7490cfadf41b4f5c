"""kube-router-bridge end to end: the console script run inside a private node namespace.

Every plugin call is a real exec (``ip netns exec <host_ns> kube-router-bridge``) with
CNI_NETNS naming a pod namespace, so the plugin takes the runtime's code path.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

from helpers.netns import wait_for
from helpers.traffic import tcp_exchange

BIN = pathlib.Path(sys.executable).parent
BRIDGE = str(BIN / "kube-router-bridge")
REF_BRIDGE = "/usr/lib/cni/bridge"


def bridge_conf(data_dir, *, subnets=("10.88.0.0/24",), plugin="kube-router-bridge",
                ipam_type="kube-router-host-local", version="1.0.0", **fields):
    ranges = [[{"subnet": s}] for s in subnets]
    conf = {"cniVersion": version, "name": "kubernetes", "type": plugin, "bridge": "kbr0",
            "isDefaultGateway": True, "hairpinMode": True,
            "ipam": {"type": ipam_type, "ranges": ranges, "dataDir": str(data_dir)}}
    conf.update(fields)
    return conf


def exec_plugin(host_ns, command, conf, netns="", cid="ctr1", ifname="eth0", binary=BRIDGE):
    """Exec a plugin inside ``host_ns``; the completed process."""
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_PATH": f"{BIN}:/usr/lib/cni", "PATH": os.environ["PATH"]}
    return host_ns.exec([binary], input=json.dumps(conf), env=env, check=False)


def cni(host_ns, command, conf, netns="", cid="ctr1", ifname="eth0", binary=BRIDGE):
    """Exec a plugin inside ``host_ns``; return (exit status, parsed stdout)."""
    proc = exec_plugin(host_ns, command, conf, netns, cid, ifname, binary)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out


def add(host_ns, conf, pod, cid, **kw):
    rc, out = cni(host_ns, "ADD", conf, pod.path, cid, **kw)
    assert rc == 0, out
    return out


def leases(data_dir) -> list[str]:
    return sorted(p.name for p in pathlib.Path(data_dir).rglob("*")
                  if p.is_file() and (p.name.count(".") == 3 or ":" in p.name))


def host_veths(host_ns) -> list[str]:
    links = json.loads(host_ns.exec("ip -j link show type veth").stdout or "[]")
    return sorted(link["ifname"] for link in links)


def pod_ip(result, version=4, gateway=False) -> str:
    for ipc in result["ips"]:
        addr = ipc["address"].split("/")[0]
        if (":" in addr) == (version == 6):
            return ipc["gateway"] if gateway else addr
    raise AssertionError(f"no IPv{version} address in {result}")


def hairpin(host_ns, veth) -> str:
    return host_ns.exec(["cat", f"/sys/class/net/{veth}/brport/hairpin_mode"]).stdout.strip()


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "ipam"


def test_ipv4_pods_talk_over_the_bridge(netns_factory, host_ns, data_dir):
    a, b = netns_factory("pa"), netns_factory("pb")
    conf = bridge_conf(data_dir)
    ra, rb = add(host_ns, conf, a, "ctra"), add(host_ns, conf, b, "ctrb")

    assert [i["name"] for i in ra["interfaces"]][::2] == ["kbr0", "eth0"]
    assert ra["interfaces"][2]["sandbox"] == a.path
    assert ra["ips"] == [{"address": "10.88.0.2/24", "gateway": "10.88.0.1", "interface": 2}]
    assert {"dst": "0.0.0.0/0", "gw": "10.88.0.1"} in ra["routes"]
    assert pod_ip(rb) == "10.88.0.3"
    host_veth = ra["interfaces"][1]["name"]
    assert host_veth.startswith("veth") and len(host_veth) == 12
    assert hairpin(host_ns, host_veth) == "1"
    assert json.loads(host_ns.exec(f"ip -j link show {host_veth}").stdout)[0]["master"] == "kbr0"
    assert host_ns.exec("sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"

    assert tcp_exchange(a, b, "10.88.0.3") == "10.88.0.2"       # pod -> pod
    assert tcp_exchange(host_ns, a, "10.88.0.2") == "10.88.0.1"  # node -> pod, from the gateway
    a.exec("busybox ping -c1 -W2 10.88.0.1")                     # pod -> gateway
    # The pod's MAC in the result is the MAC of its interface.
    mac = json.loads(a.exec("ip -j link show eth0").stdout)[0]["address"]
    assert ra["interfaces"][2]["mac"] == mac

    for _ in range(2):                                            # DEL twice = success
        for pod, cid in ((a, "ctra"), (b, "ctrb")):
            assert cni(host_ns, "DEL", conf, pod.path, cid) == (0, None)
    assert host_veths(host_ns) == [] and leases(data_dir) == []
    # The bridge's MAC was pinned: it did not follow a pod's veth, which is gone now.
    bridge_mac = json.loads(host_ns.exec("ip -j link show kbr0").stdout)[0]["address"]
    assert bridge_mac == ra["interfaces"][0]["mac"] == rb["interfaces"][0]["mac"]
    assert bridge_mac not in (ra["interfaces"][1]["mac"], rb["interfaces"][1]["mac"])


def test_dual_stack_pods(netns_factory, host_ns, data_dir):
    a, b = netns_factory("pa"), netns_factory("pb")
    conf = bridge_conf(data_dir, subnets=("10.89.0.0/24", "fd00:89::/64"))
    ra, rb = add(host_ns, conf, a, "ctra"), add(host_ns, conf, b, "ctrb")
    assert [ipc["address"] for ipc in ra["ips"]] == ["10.89.0.2/24", "fd00:89::2/64"]
    assert {"dst": "::/0", "gw": "fd00:89::1"} in ra["routes"]
    assert tcp_exchange(a, b, pod_ip(rb, 6)) == pod_ip(ra, 6)     # no DAD wait: enabledad false
    assert tcp_exchange(a, b, pod_ip(rb, 4)) == pod_ip(ra, 4)
    a.exec("busybox ping6 -c1 -W2 fd00:89::1")
    assert host_ns.exec("sysctl -n net.ipv6.conf.all.forwarding").stdout.strip() == "1"
    bridge_addrs = json.loads(host_ns.exec("ip -j addr show kbr0").stdout)[0]["addr_info"]
    assert {"10.89.0.1/24", "fd00:89::1/64"} <= {f"{x['local']}/{x['prefixlen']}"
                                               for x in bridge_addrs}
    for pod, cid in ((a, "ctra"), (b, "ctrb")):
        assert cni(host_ns, "DEL", conf, pod.path, cid) == (0, None)
    assert leases(data_dir) == []


def test_add_rolls_back_when_the_ifname_exists_in_the_pod(netns_factory, host_ns, data_dir):
    pod = netns_factory("pod")
    pod.exec("ip link add eth0 type veth peer name other0")
    conf = bridge_conf(data_dir)
    rc, err = cni(host_ns, "ADD", conf, pod.path, "ctr1")
    assert rc == 1 and err["code"] == 999 and "eth0" in err["msg"] and "exists" in err["msg"]
    assert host_veths(host_ns) == [] and leases(data_dir) == []


def test_add_rolls_back_when_ipam_has_no_free_address(netns_factory, host_ns, data_dir):
    first, second = netns_factory("p1"), netns_factory("p2")
    conf = bridge_conf(data_dir)
    conf["ipam"]["ranges"] = [[{"subnet": "10.90.0.0/24", "rangeStart": "10.90.0.5",
                                "rangeEnd": "10.90.0.5"}]]
    add(host_ns, conf, first, "ctr1")
    veths = host_veths(host_ns)
    rc, err = cni(host_ns, "ADD", conf, second.path, "ctr2")
    assert rc == 1 and err["code"] != 0, err
    assert host_veths(host_ns) == veths and leases(data_dir) == ["10.90.0.5"]
    assert json.loads(second.exec("ip -j link show").stdout)[0]["ifname"] == "lo"
    assert len(json.loads(second.exec("ip -j link show").stdout)) == 1


def test_add_rolls_back_a_late_failure_including_masquerade(netns_factory, host_ns, data_dir):
    pod = netns_factory("pod")
    # Another address already on the bridge: the gateway step (after veth, IPAM and
    # addresses) fails without forceAddress.
    host_ns.exec("ip link add kbr0 type bridge")
    host_ns.exec("ip addr add 192.168.99.1/24 dev kbr0")
    conf = bridge_conf(data_dir, ipMasq=True)
    rc, err = cni(host_ns, "ADD", conf, pod.path, "ctr1")
    assert rc == 1 and "kbr0" in err["msg"] and "192.168.99.1" not in err["msg"], err
    assert "already has an IP address" in err["msg"]
    assert host_veths(host_ns) == [] and leases(data_dir) == []
    assert "CNI-" not in host_ns.exec("iptables-save -t nat").stdout
    # forceAddress replaces the address, as the reference does.
    add(host_ns, dict(conf, forceAddress=True), pod, "ctr1")
    addrs = json.loads(host_ns.exec("ip -j -4 addr show kbr0").stdout)[0]["addr_info"]
    assert [a["local"] for a in addrs] == ["10.88.0.1"]
    assert cni(host_ns, "DEL", conf, pod.path, "ctr1") == (0, None)


def test_add_refuses_a_bridge_name_that_is_not_a_bridge(netns_factory, host_ns, data_dir):
    pod = netns_factory("pod")
    host_ns.exec("ip link add kbr0 type veth peer name kbr0peer")
    rc, err = cni(host_ns, "ADD", bridge_conf(data_dir), pod.path, "ctr1")
    assert rc == 1 and err["code"] == 7 and "'kbr0'" in err["msg"] and "not a bridge" in err["msg"]
    assert host_veths(host_ns) == ["kbr0", "kbr0peer"] and leases(data_dir) == []


def test_enabledad_waits_for_duplicate_address_detection(netns_factory, host_ns, data_dir):
    a, b = netns_factory("pa"), netns_factory("pb")
    conf = bridge_conf(data_dir, subnets=("fd00:93::/64",), enabledad=True)
    ra, rb = add(host_ns, conf, a, "ctra"), add(host_ns, conf, b, "ctrb")
    # ADD returned only once DAD was over: the address is no longer tentative.
    addr = json.loads(a.exec("ip -j -6 addr show dev eth0 scope global").stdout)[0]["addr_info"][0]
    assert addr["local"] == pod_ip(ra, 6) and not addr.get("tentative") and not addr.get("nodad")
    wait_for(lambda: "tentative" not in host_ns.exec("ip -6 addr show dev kbr0").stdout,
             timeout=5, what="the bridge's IPv6 address to leave DAD")
    assert tcp_exchange(a, b, pod_ip(rb, 6)) == pod_ip(ra, 6)
    for pod, cid in ((a, "ctra"), (b, "ctrb")):
        assert cni(host_ns, "DEL", conf, pod.path, cid) == (0, None)


def test_ip_masq_rules_and_real_masqueraded_packets(netns_factory, host_ns, data_dir):
    pod, outside = netns_factory("pod"), netns_factory("out")
    # "outside": a network only the node reaches, on a veth of its own.
    from helpers.netns import veth_pair
    veth_pair(host_ns, "uplink", outside, "eth0")
    host_ns.exec("ip addr add 198.51.100.1/24 dev uplink")
    outside.exec("ip addr add 198.51.100.2/24 dev eth0")
    conf = bridge_conf(data_dir, ipMasq=True)
    result = add(host_ns, conf, pod, "ctr1")
    nat = host_ns.exec("iptables-save -t nat").stdout
    assert "-A POSTROUTING -s 10.88.0.2/32" in nat and "MASQUERADE" in nat
    assert 'name: \\"kubernetes\\" id: \\"ctr1\\"' in nat
    # The server outside sees the node's address, not the pod's.
    assert tcp_exchange(pod, outside, "198.51.100.2") == "198.51.100.1"
    assert pod_ip(result) == "10.88.0.2"
    assert cni(host_ns, "DEL", conf, pod.path, "ctr1") == (0, None)
    assert "CNI-" not in host_ns.exec("iptables-save -t nat").stdout


def test_del_without_netns_releases_the_lease(netns_factory, host_ns, data_dir):
    pod = netns_factory("pod")
    conf = bridge_conf(data_dir)
    add(host_ns, conf, pod, "ctr1")
    assert leases(data_dir) == ["10.88.0.2"]
    assert cni(host_ns, "DEL", conf, "", "ctr1") == (0, None)
    assert leases(data_dir) == []
    # The netns is still there: a DEL with it removes the veth; a gone netns is fine too.
    assert cni(host_ns, "DEL", conf, pod.path, "ctr1") == (0, None)
    assert host_veths(host_ns) == []
    assert cni(host_ns, "DEL", conf, "/run/netns/krt-does-not-exist", "ctr1") == (0, None)


def test_add_with_a_missing_netns_names_the_path(host_ns, data_dir):
    rc, err = cni(host_ns, "ADD", bridge_conf(data_dir), "/run/netns/krt-missing", "ctr1")
    assert rc == 1 and err["code"] == 3 and "/run/netns/krt-missing" in err["msg"]
    assert leases(data_dir) == []


def node_state(host_ns):
    """The node's links, global addresses and IPv4 routes (every table)."""
    links = json.loads(host_ns.exec("ip -j addr show").stdout)
    return ({(link["ifname"], link.get("master")) for link in links},
            {(link["ifname"], f"{a['local']}/{a['prefixlen']}") for link in links
             for a in link.get("addr_info", []) if a.get("scope") != "link"},
            host_ns.exec("ip -4 route show table all").stdout)


@pytest.mark.parametrize("own", ["bind mount", "/proc/self/ns/net"])
def test_the_plugins_own_namespace_is_not_a_pod_namespace(netns_factory, host_ns, data_dir, own):
    pod = netns_factory("pod")
    conf = bridge_conf(data_dir)
    result = add(host_ns, conf, pod, "ctr1")           # the node has kbr0, a veth, a lease
    path = host_ns.path if own == "bind mount" else own   # both name the plugin's namespace
    before = node_state(host_ns)
    for command, stdin in (("ADD", conf), ("CHECK", dict(conf, prevResult=result))):
        rc, err = cni(host_ns, command, stdin, path, "ctr2")
        assert rc == 1 and err["code"] == 8, err
        assert err["msg"] == "plugin's netns and netns from CNI_NETNS should not be the same"
        assert path in err["details"], err
        assert node_state(host_ns) == before, command   # no address, route, veth or bridge
        assert leases(data_dir) == ["10.88.0.2"]
    # DEL touches no link in that namespace (the node's eth0 stays) and succeeds; the
    # container's lease is released as for a pod whose namespace is gone.
    host_ns.exec("ip link add eth0 type veth peer name eth0-peer")
    before = node_state(host_ns)
    proc = exec_plugin(host_ns, "DEL", conf, path, "ctr1")
    assert (proc.returncode, proc.stdout) == (0, ""), proc
    assert "no link deleted" in proc.stderr and path in proc.stderr
    assert node_state(host_ns) == before
    assert leases(data_dir) == []
    assert cni(host_ns, "DEL", conf, pod.path, "ctr1") == (0, None)
    assert host_veths(host_ns) == ["eth0", "eth0-peer"]


def test_check_passes_then_fails_on_lost_address_and_hairpin(netns_factory, host_ns, data_dir):
    pod = netns_factory("pod")
    conf = bridge_conf(data_dir)
    result = add(host_ns, conf, pod, "ctr1")
    checked = dict(conf, prevResult=result)
    assert cni(host_ns, "CHECK", checked, pod.path, "ctr1") == (0, None)

    rc, err = cni(host_ns, "CHECK", conf, pod.path, "ctr1")      # no prevResult
    assert rc == 1 and err["code"] == 7 and "prevResult" in err["msg"]

    veth = result["interfaces"][1]["name"]
    host_ns.exec(["ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "off"])
    rc, err = cni(host_ns, "CHECK", checked, pod.path, "ctr1")
    assert rc == 1 and err["code"] == 999 and "hairpin" in err["msg"] and veth in err["msg"]
    host_ns.exec(["ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "on"])
    assert cni(host_ns, "CHECK", checked, pod.path, "ctr1") == (0, None)

    pod.exec("ip addr del 10.88.0.2/24 dev eth0")
    rc, err = cni(host_ns, "CHECK", checked, pod.path, "ctr1")
    assert rc == 1 and err["code"] == 999 and "10.88.0.2/24" in err["msg"]
    assert cni(host_ns, "DEL", conf, pod.path, "ctr1") == (0, None)


def test_container_mac_from_runtime_config(netns_factory, host_ns, data_dir):
    pod = netns_factory("pod")
    conf = bridge_conf(data_dir, runtimeConfig={"mac": "02:42:0a:58:00:99"}, mtu=1400)
    result = add(host_ns, conf, pod, "ctr1")
    link = json.loads(pod.exec("ip -j link show eth0").stdout)[0]
    assert link["address"] == result["interfaces"][2]["mac"] == "02:42:0a:58:00:99"
    assert link["mtu"] == 1400
    assert cni(host_ns, "DEL", conf, pod.path, "ctr1") == (0, None)


def _shape(result):
    """What must agree between two plugins' results: names by role, addresses, routes."""
    ifaces = result["interfaces"]
    return {
        "interfaces": [(i["name"] if not i["name"].startswith("veth") else "veth*",
                        bool(i.get("mac")), bool(i.get("sandbox"))) for i in ifaces],
        "ips": sorted((ipc["address"], ipc.get("gateway"), ifaces[ipc["interface"]]["name"])
                      for ipc in result["ips"]),
        "routes": sorted((r["dst"], r.get("gw")) for r in result.get("routes", [])),
        "dns": result.get("dns", {}),
    }


@pytest.mark.skipif(not os.access(REF_BRIDGE, os.X_OK), reason="reference plugins not installed "
                    "(Debian containernetworking-plugins)")
@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
@pytest.mark.parametrize("subnets", [("10.91.0.0/24",), ("10.91.0.0/24", "fd00:91::/64")])
def test_parity_with_the_reference_bridge(netns_factory, host_ns, tmp_path, version, subnets):
    results = {}
    for impl, plugin, ipam in (("ref", "bridge", "host-local"),
                               ("ours", "kube-router-bridge", "kube-router-host-local")):
        node = netns_factory(f"n{impl}") if impl == "ours" else host_ns
        node.sysctl("net.ipv4.ip_forward", 1)
        a, b = netns_factory(f"{impl}a"), netns_factory(f"{impl}b")
        conf = bridge_conf(tmp_path / impl, subnets=subnets, plugin=plugin, ipam_type=ipam,
                           version=version)
        binary = REF_BRIDGE if impl == "ref" else BRIDGE
        ra = add(node, conf, a, "ctra", binary=binary)
        rb = add(node, conf, b, "ctrb", binary=binary)
        results[impl] = (ra, rb)
        # The reference adds the bridge's IPv6 gateway with DAD: the node can source from
        # it only after ~1-2 s. Ours adds it with nodad (enabledad false): usable at once.
        wait_for(lambda: "tentative" not in node.exec("ip -6 addr show dev kbr0").stdout,
                 timeout=5, what="the bridge's IPv6 address to leave DAD")
        for v in sorted({6 if ":" in s else 4 for s in subnets}):
            assert tcp_exchange(a, b, pod_ip(rb, v)) == pod_ip(ra, v)
            assert tcp_exchange(node, a, pod_ip(ra, v)) == pod_ip(ra, v, gateway=True)
        assert hairpin(node, ra["interfaces"][1]["name"]) == "1"
        checked = dict(conf, prevResult=ra)
        assert cni(node, "CHECK", checked, a.path, "ctra", binary=binary) == (0, None)
        for pod, cid in ((a, "ctra"), (b, "ctrb")):
            assert cni(node, "DEL", conf, pod.path, cid, binary=binary) == (0, None)
        assert host_veths(node) == [] and leases(tmp_path / impl) == []
    for ours, ref in zip(results["ours"], results["ref"]):
        assert ours["cniVersion"] == ref["cniVersion"] == version
        assert _shape(ours) == _shape(ref)
