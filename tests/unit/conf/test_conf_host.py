"""Auto-MTU from the default-route interface, and `show`'s provenance."""
from __future__ import annotations

from conf.host import Host, auto_mtu, default_route_interface_v4, default_route_interface_v6
from conf_helpers import fake_host

ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t010200C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
IPV6_ROUTE = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     ens3\n")


def test_default_route_interface_lowest_metric():
    assert default_route_interface_v4(ROUTE) == "eth0"
    assert default_route_interface_v4(ROUTE.splitlines()[0]) is None


def test_ipv6_default_route_skips_unreachable_on_lo():
    assert default_route_interface_v6(IPV6_ROUTE) == "ens3"
    assert default_route_interface_v6(IPV6_ROUTE.splitlines()[0]) is None


def test_auto_mtu_reads_the_default_route_interface():
    asked = []
    host = Host(environ={}, hostname=lambda: "n", default_route_interface=lambda: "eth7",
                interface_mtu=lambda name: asked.append(name) or 8950)
    assert auto_mtu(host) == (8950, "auto: mtu of eth7 (default route)")
    assert asked == ["eth7"]
    assert auto_mtu(fake_host(iface=None))[0] is None


def show_rows(result) -> dict:
    assert result.exit_code == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        name, rest = line.split(None, 1)
        rows[name] = rest
    return rows


def test_show_says_where_each_value_came_from(run_cli, tmp_path):
    rows = show_rows(run_cli(["show", "--pod-cidr", "10.1.0.0/24", "--plugins", "reference"],
                             env={"KUBE_ROUTER_CNI_CONF_FILE": str(tmp_path / "e.conflist")},
                             host=fake_host(iface="bond0", mtu=9000)))
    assert rows["output"].endswith("[env KUBE_ROUTER_CNI_CONF_FILE]")
    assert rows["pod_cidrs"].split() == ["10.1.0.0/24", "[flag", "--pod-cidr]"]
    assert rows["mtu"].startswith("9000") and "auto: mtu of bond0" in rows["mtu"]
    assert rows["plugins"].split()[0] == "reference" and "[flag --plugins]" in rows["plugins"]
    assert rows["bridge"].split() == ["kube-bridge", "[default]"]
    assert not (tmp_path / "e.conflist").exists()


def test_show_mtu_flag_and_no_auto(run_cli):
    assert "[flag --mtu]" in show_rows(run_cli(["show", "--pod-cidr", "10.1.0.0/24",
                                                "--mtu", "1400"]))["mtu"]
    assert "--no-auto-mtu" in show_rows(run_cli(["show", "--pod-cidr", "10.1.0.0/24",
                                                 "--no-auto-mtu"]))["mtu"]
