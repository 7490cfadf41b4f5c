"""ADD, CHECK and DEL against a stateful fake of iptables that parses our own restore text."""
import contextlib
import ipaddress
import subprocess

import pytest

from cni import names, skel
from cni.portmap import config
from cni.portmap import plugin as portmap
from helpers.xtables import FakeXtables
from lowlevel import localnet
from lowlevel import xtables as ipt


class FakeNetfilter(FakeXtables):
    """One namespace as portmap sees it: the nat tables of both families, IPv4's raw table
    (the localnet guard) and conntrack."""

    def __init__(self):
        super().__init__()
        self.conntrack: list[list[str]] = []
        self.conntrack_missing = False
        self.before_restore = None   # hook: another program changes nat meanwhile

    def __call__(self, argv, input=None):
        if argv[0] == "conntrack":
            if self.conntrack_missing:
                return subprocess.CompletedProcess(argv, 127, "", "No such file: conntrack")
            self.conntrack.append(argv)
            return subprocess.CompletedProcess(argv, 1, "", "0 flow entries have been deleted.")
        if "raw" in argv or (input or "").startswith("*raw"):
            assert not argv[0].startswith("ip6"), "the localnet guard is IPv4 only"
        elif input is not None and self.before_restore:
            hook, self.before_restore = self.before_restore, None
            hook(self)
        return super().__call__(argv, input)

    def save(self, family: int, name: str = "nat") -> str:
        return super().save(family, name)

    def nat(self, family: int) -> dict[str, list[str]]:
        """The chains of a family's nat table, to change behind the plugin's back."""
        return self.table(family, "nat")["chains"]

    def nat_restores(self) -> list[str]:
        return [text for text in self.restores if text.startswith("*nat")]

    def ours(self, family: int) -> str:
        """Every line that mentions a per-container chain."""
        return "\n".join(line for line in self.save(family).splitlines()
                         if names.PORTMAP_DNAT_PREFIX in line)


@pytest.fixture
def kernel():
    return FakeNetfilter()


@pytest.fixture
def host(kernel, tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "cni0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "kr-br\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    for ifname in ("eth0", "cni0", "kr-br"):
        d = tmp_path / "sys/net/ipv4/conf" / ifname
        d.mkdir(parents=True)
        (d / "route_localnet").write_text("0")
    logs = []
    return portmap.Host(run=kernel, lock=contextlib.nullcontext(), proc=str(tmp_path),
                        log=logs.append)


def conf(*entries, **extra):
    return config.parse_config({"name": "net1", **extra,
                                 "runtimeConfig": {"portMappings": list(entries)}})


DUAL = {"ips": [{"address": "10.0.0.2/24"}, {"address": "fd00::2/64"}]}
V4 = {"ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]}
WEB = {"hostPort": 8080, "containerPort": 80}
DNS = {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}


def test_add_then_del_leaves_nothing_of_ours_and_foreign_rules_untouched(kernel, host):
    kernel.nat(4)["PREROUTING"].append("-j KUBE-SERVICES")
    kernel.nat(4)["KUBE-SERVICES"] = ["-p tcp -j RETURN"]
    before = {f: kernel.save(f) for f in (4, 6)}
    portmap.add(host, conf(WEB, DNS), "cid1", "eth0", DUAL)
    assert kernel.ours(4) and kernel.ours(6)
    assert len(kernel.nat_restores()) == 2   # one transaction per family
    portmap.delete(host, "cid1", "eth0")
    # The last container's DEL takes the shared chains along; foreign rules stay as found.
    assert {f: kernel.save(f) for f in (4, 6)} == before


def test_many_containers_share_chains_and_each_del_removes_only_its_own(kernel, host):
    for i in range(5):
        portmap.add(host, conf({"hostPort": 8000 + i, "containerPort": 80}), f"c{i}", "eth0",
                    {"ips": [{"address": f"10.0.0.{10 + i}/24"}]})
    nat = kernel.nat(4)
    assert len(nat[names.HOSTPORT_DNAT_CHAIN]) == 5
    assert len([r for r in nat["PREROUTING"] if names.HOSTPORT_DNAT_CHAIN in r]) == 1
    assert len(nat[names.HOSTPORT_SETMARK_CHAIN]) == 1
    portmap.delete(host, "c2", "eth0")
    nat = kernel.nat(4)   # every restore swaps in a new table (all or nothing)
    assert names.portmap_dnat_chain("c2", "eth0") not in nat
    assert all("8002" not in r for r in nat[names.HOSTPORT_DNAT_CHAIN])
    assert len(nat[names.HOSTPORT_DNAT_CHAIN]) == 4
    portmap.check(host, conf({"hostPort": 8003, "containerPort": 80}), "c3", "eth0",
                  {"ips": [{"address": "10.0.0.13/24"}]})
    for i in (0, 1, 3):
        portmap.delete(host, f"c{i}", "eth0")
    assert names.HOSTPORT_DNAT_CHAIN in kernel.nat(4)   # c4 still uses the shared chains
    portmap.delete(host, "c4", "eth0")
    assert kernel.save(4) == FakeNetfilter().save(4)


def test_repeated_add_converges(kernel, host):
    portmap.add(host, conf(WEB), "cid1", "eth0", V4)
    first = kernel.save(4)
    portmap.add(host, conf(WEB), "cid1", "eth0", V4)
    assert kernel.save(4) == first
    portmap.add(host, conf({"hostPort": 9090, "containerPort": 90}), "cid1", "eth0", V4)
    assert "8080" not in kernel.ours(4) and "9090" in kernel.ours(4)


def test_del_is_idempotent_and_needs_no_prev_result(kernel, host):
    portmap.delete(host, "never-added", "eth0")
    portmap.add(host, conf(WEB), "cid1", "eth0", V4)
    portmap.delete(host, "cid1", "eth0")
    restores = len(kernel.nat_restores())
    portmap.delete(host, "cid1", "eth0")
    assert len(kernel.nat_restores()) == restores   # nothing there: nothing written


def test_del_of_another_interface_leaves_this_one(kernel, host):
    portmap.add(host, conf(WEB), "cid1", "eth0", V4)
    portmap.add(host, conf({"hostPort": 9090, "containerPort": 90}), "cid1", "net1", V4)
    portmap.delete(host, "cid1", "net1")
    portmap.check(host, conf(WEB), "cid1", "eth0", V4)
    assert "9090" not in kernel.ours(4)


def test_check_of_an_ipv4_only_pod_does_not_look_at_ip6tables(kernel, host):
    portmap.add(host, conf(WEB), "cid1", "eth0", V4)
    kernel.broken_families.add(6)   # any ip6tables call would now blow up
    portmap.check(host, conf(WEB), "cid1", "eth0", V4)


def test_check_reports_a_removed_rule(kernel, host):
    portmap.add(host, conf(WEB), "cid1", "eth0", DUAL)
    chain = names.portmap_dnat_chain("cid1", "eth0")
    kernel.nat(6)[chain].pop()
    with pytest.raises(skel.CniError) as err:
        portmap.check(host, conf(WEB), "cid1", "eth0", DUAL)
    assert "ipv6" in err.value.details and "ipv4" not in err.value.details


def test_shared_chains_still_used_by_a_foreign_chain_stay(kernel, host):
    portmap.add(host, conf(WEB), "cid1", "eth0", V4)
    kernel.nat(4)["CNI-DN-0123456789abcdef0"] = ["-j CNI-HOSTPORT-SETMARK"]
    portmap.delete(host, "cid1", "eth0")
    nat = kernel.nat(4)
    assert names.HOSTPORT_DNAT_CHAIN not in nat
    assert nat[names.HOSTPORT_SETMARK_CHAIN] and nat[names.HOSTPORT_MASQ_CHAIN]
    assert kernel.ours(4) == ""


def test_a_race_with_another_program_is_retried(kernel, host):
    def other_plugin_creates_shared_chains(k):
        k.nat(4)[names.HOSTPORT_DNAT_CHAIN] = []
    kernel.before_restore = other_plugin_creates_shared_chains
    portmap.add(host, conf(WEB), "cid1", "eth0", V4)
    assert len(kernel.nat_restores()) == 2
    assert "-N CNI-HOSTPORT-DNAT" not in kernel.nat_restores()[1]
    portmap.check(host, conf(WEB), "cid1", "eth0", V4)


def test_a_restore_that_keeps_failing_is_an_error_naming_the_line(kernel, host):
    bad = conf(WEB, externalSetMarkChain="NO-SUCH-CHAIN")
    with pytest.raises(ipt.RestoreError) as err:
        portmap.add(host, bad, "cid1", "eth0", V4)
    assert "NO-SUCH-CHAIN" in str(err.value)
    assert kernel.ours(4) == ""   # all or nothing


def test_udp_conntrack_is_flushed_per_family_only_for_udp_ports(kernel, host):
    portmap.add(host, conf(WEB), "cid1", "eth0", DUAL)
    assert kernel.conntrack == []
    portmap.add(host, conf(WEB, DNS, {"hostPort": 5454, "containerPort": 54, "protocol": "UDP",
                                      "hostIP": "192.0.2.1"}), "cid2", "eth0", DUAL)
    assert kernel.conntrack == [
        ["conntrack", "-D", "-f", "ipv4", "-p", "udp", "--orig-port-dst", "5353"],
        ["conntrack", "-D", "-f", "ipv4", "-p", "udp", "--orig-port-dst", "5454"],
        ["conntrack", "-D", "-f", "ipv6", "-p", "udp", "--orig-port-dst", "5353"]]


def test_missing_conntrack_tool_is_logged_not_fatal(kernel, host):
    kernel.conntrack_missing = True
    portmap.add(host, conf(DNS), "cid1", "eth0", V4)
    assert any("conntrack" in line for line in host.log.__self__)
    portmap.check(host, conf(DNS), "cid1", "eth0", V4)


def test_route_localnet_is_set_on_the_interface_routing_to_the_container(kernel, host, tmp_path):
    portmap.add(host, conf(WEB), "cid1", "eth0", V4)
    conf_dir = tmp_path / "sys/net/ipv4/conf"
    assert (conf_dir / "kr-br/route_localnet").read_text() == "1"   # 10.0.0.0/24 beats /16
    assert (conf_dir / "cni0/route_localnet").read_text() == "0"
    assert (conf_dir / "eth0/route_localnet").read_text() == "0"
    assert kernel.rules("PREROUTING", 4, "raw") == [f"-j {localnet.PLUGIN_CHAIN}"]


def test_no_route_localnet_when_the_guard_cannot_be_written(kernel, host, tmp_path):
    real = kernel.__call__

    def refuse_raw(argv, input=None):
        if input is not None and input.startswith("*raw"):
            return subprocess.CompletedProcess(argv, 1, "", "iptables-restore: no raw table")
        return real(argv, input)
    host.run = refuse_raw
    with pytest.raises(ipt.IptablesError):
        portmap.add(host, conf(WEB), "cid1", "eth0", V4)
    assert (tmp_path / "sys/net/ipv4/conf/kr-br/route_localnet").read_text() == "0"
    assert kernel.ours(4) == ""      # ADD rolled back


def test_no_route_localnet_without_snat(kernel, host, tmp_path):
    portmap.add(host, conf(WEB, snat=False), "cid1", "eth0", V4)
    assert (tmp_path / "sys/net/ipv4/conf/kr-br/route_localnet").read_text() == "0"
    assert "SETMARK" not in kernel.save(4)


def test_routed_interface_longest_prefix():
    table = ("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
             "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n"
             "br0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
             "wide\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\n")
    assert portmap.routed_interface(ipaddress.ip_address("10.0.0.9"), table) == "br0"
    assert portmap.routed_interface(ipaddress.ip_address("10.0.1.9"), table) == "wide"
    # Only the default route (through a gateway) matches: no interface, no route_localnet.
    assert portmap.routed_interface(ipaddress.ip_address("10.1.0.9"), table) == ""


def test_a_failed_add_rolls_back_the_family_that_succeeded(kernel, host):
    real = kernel.__call__

    def ip6tables_restore_fails(argv, input=None):
        if argv[0] == "ip6tables-restore":
            return subprocess.CompletedProcess(argv, 1, "", "ip6tables-restore: line 3 failed")
        return real(argv, input)
    host.run = ip6tables_restore_fails
    with pytest.raises(ipt.RestoreError):
        portmap.add(host, conf(WEB), "cid1", "eth0", DUAL)
    assert kernel.save(4) == FakeNetfilter().save(4)


def request(command, prev=DUAL, version="1.0.0", *entries):
    return skel.Request(command, container_id="cid1", netns="/run/netns/p", ifname="eth0",
                        conf={"cniVersion": version, "name": "net1",
                              "runtimeConfig": {"portMappings": list(entries) or [WEB]}},
                        version=version, prev_result=prev)


def test_commands_with_an_injected_host(kernel, host):
    assert portmap.cmd_add(request("ADD"), host) == DUAL
    portmap.cmd_check(request("CHECK"), host)
    kernel.nat(4)[names.HOSTPORT_DNAT_CHAIN].clear()
    with pytest.raises(skel.CniError) as err:
        portmap.cmd_check(request("CHECK"), host)
    assert err.value.code == skel.INTERNAL and "jumps to" in err.value.details
    portmap.cmd_del(request("DEL", None), host)
    assert kernel.ours(4) == "" and kernel.ours(6) == ""


def test_a_kernel_failure_becomes_a_cni_error_with_the_failing_line(kernel, host):
    bad = request("ADD", V4)
    bad = bad.replace(conf={**bad.conf, "externalSetMarkChain": "NO-SUCH-CHAIN"})
    with pytest.raises(skel.CniError) as err:
        portmap.cmd_add(bad, host)
    assert err.value.code == skel.INTERNAL
    assert "iptables-restore failed at line" in err.value.msg
    assert "NO-SUCH-CHAIN" in err.value.details


def test_skel_answers_an_old_cni_version_with_the_prev_result_in_that_version(capsys):
    stdin = ('{"cniVersion": "0.4.0", "name": "net1", "type": "kube-router-portmap",'
             ' "prevResult": {"cniVersion": "0.4.0", "ips": [{"version": "4",'
             ' "address": "10.0.0.2/24"}]}}').encode()
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "cid1", "CNI_NETNS": "/run/netns/p",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    # No port mappings: nothing touches the kernel, the prevResult passes through.
    assert skel.run(portmap, env, stdin) == 0
    out = capsys.readouterr().out
    assert '"version": "4"' in out and '"cniVersion": "0.4.0"' in out


def test_gc_removes_only_this_networks_chains_that_no_attachment_owns(kernel, host):
    portmap.add(host, conf(WEB), "keep", "eth0", DUAL)
    portmap.add(host, conf({"hostPort": 9000, "containerPort": 80}), "gone", "eth0", DUAL)
    other_net = config.parse_config({"name": "net2", "runtimeConfig": {
        "portMappings": [{"hostPort": 9100, "containerPort": 80}]}})
    portmap.add(host, other_net, "other", "eth0", V4)
    orphan = names.portmap_dnat_chain("orphan", "eth0")
    kernel.nat(4)[orphan] = ["-p tcp -m tcp --dport 1 -j DNAT --to-destination 10.0.0.9:1"]

    req = skel.Request("GC", path=("/usr/lib/cni",), version="1.1.0", conf={
        "cniVersion": "1.1.0", "name": "net1",
        "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    portmap.cmd_gc(req, host)

    left = set(kernel.nat(4)) | set(kernel.nat(6))
    assert names.portmap_dnat_chain("keep", "eth0") in left
    assert names.portmap_dnat_chain("other", "eth0") in left          # net2's to collect
    assert names.portmap_dnat_chain("gone", "eth0") not in left
    assert orphan not in left
    portmap.check(host, conf(WEB), "keep", "eth0", DUAL)
    assert "9000" not in kernel.ours(4) + kernel.ours(6)


def test_gc_needs_the_valid_attachments():
    req = skel.Request("GC", version="1.1.0", conf={"cniVersion": "1.1.0", "name": "net1"})
    with pytest.raises(skel.CniError) as err:
        portmap.cmd_gc(req, portmap.Host(run=FakeNetfilter(), lock=contextlib.nullcontext()))
    assert err.value.code == skel.INVALID_CONFIG
    assert "cni.dev/valid-attachments" in err.value.msg
