"""kube-router's command line: Go pflag forms, defaults, typed values, errors that name the flag."""
import ipaddress
from datetime import timedelta

import pytest

from proxyd import cli
from proxyd import config as cfg


def parse(*argv):
    config, action = cli.parse_args(list(argv))
    assert action is None
    return config


# The defaults kube-router documents (/tmp/kr_flags.md), as the Go flag prints them.
KUBE_ROUTER_DEFAULTS = {
    "advertise-cluster-ip": "false", "advertise-external-ip": "false",
    "advertise-loadbalancer-ip": "false", "advertise-pod-cidr": "true",
    "bgp-graceful-restart": "false", "bgp-graceful-restart-deferral-time": "6m0s",
    "bgp-graceful-restart-time": "1m30s", "bgp-holdtime": "1m30s", "bgp-port": "179",
    "cache-sync-timeout": "1m0s", "cleanup-config": "false", "cluster-asn": "0",
    "disable-source-dest-check": "true", "enable-cni": "true", "enable-ibgp": "true",
    "enable-overlay": "true", "enable-pod-egress": "true", "enable-pprof": "false",
    "excluded-cidrs": "[]", "hairpin-mode": "false", "health-port": "20244",
    "hostname-override": "", "iptables-sync-period": "5m0s", "ipvs-graceful-period": "30s",
    "ipvs-graceful-termination": "false", "ipvs-permit-all": "true", "ipvs-sync-period": "5m0s",
    "kubeconfig": "", "masquerade-all": "false", "master": "", "metrics-path": "/metrics",
    "metrics-port": "0", "nodeport-bindon-all-ip": "false", "nodes-full-mesh": "true",
    "overlay-type": "subnet", "override-nexthop": "false", "peer-router-asns": "[]",
    "peer-router-ips": "[]", "peer-router-multihop-ttl": "0", "peer-router-passwords": "[]",
    "peer-router-ports": "[]", "router-id": "", "routes-sync-period": "5m0s",
    "run-firewall": "true", "run-router": "true", "run-service-proxy": "true",
    "service-cluster-ip-range": "[10.96.0.0/12]", "service-external-ip-range": "[]",
    "service-node-port-range": "30000-32767", "v": "0",
    "enable-ipv4": "true", "enable-ipv6": "false", "run-loadbalancer": "false",
    "loadbalancer-ip-range": "[]", "loadbalancer-default-class": "true",
    "loadbalancer-sync-period": "1m0s", "injected-routes-sync-period": "1m0s",
    "gobgp-admin-port": "50051", "metrics-addr": "",
}


@pytest.mark.parametrize("name,shown", sorted(KUBE_ROUTER_DEFAULTS.items()))
def test_default_matches_kube_router(name, shown):
    assert cfg.format_default(cfg.FLAGS[name]) == shown


def test_defaults_are_typed():
    c = cfg.Config()
    assert c.iptables_sync_period == timedelta(minutes=5)
    assert c.service_cluster_ip_range == (ipaddress.ip_network("10.96.0.0/12"),)
    assert c.service_node_port_range == (30000, 32767)
    assert c.health_port == 20244 and c.metrics_port == 0


def test_seed_command_line_parses():
    c = parse("--master=http://127.0.0.1:8080", "--run-firewall=true",
              "--run-service-proxy=false", "--run-router=false")
    assert (c.master, c.run_firewall, c.run_service_proxy, c.run_router) == (
        "http://127.0.0.1:8080", True, False, False)


@pytest.mark.parametrize("argv,expected", [
    (["--run-router"], True),
    (["--run-router=false"], False),
    (["--run-router=true"], True),
    (["--run-router=0"], False),
    (["--run-router=F"], False),
    (["--run-router=TRUE"], True),
    (["--run-router=t"], True),
    (["--run-router=False", "--run-router"], True),     # last one wins
])
def test_go_bool_forms(argv, expected):
    assert parse(*argv).run_router is expected


def test_bool_value_after_space_is_not_taken():
    # pflag: "--run-router false" leaves "false" as an argument; kube-router takes none.
    with pytest.raises(cfg.FlagError, match="unexpected argument 'false'"):
        parse("--run-router", "false")


@pytest.mark.parametrize("bad", ["yes", "on", "2", ""])
def test_bad_bool_names_flag(bad):
    with pytest.raises(cfg.FlagError, match=f"--hairpin-mode: '{bad}'"):
        parse(f"--hairpin-mode={bad}")


@pytest.mark.parametrize("text,seconds", [
    ("5m", 300), ("1m0s", 60), ("2h22m", 8520), ("500ms", 0.5), ("90s", 90),
    ("1h30m10s500ms", 5410.5), ("1.5h", 5400), ("0", 0), ("300us", 0.0003),
])
def test_go_durations(text, seconds):
    assert cfg.parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "5 m", "m", "1d", "", "5mm", "1h-2m"])
def test_bad_durations_rejected(bad):
    with pytest.raises(ValueError):
        cfg.parse_duration(bad)


def test_duration_flag_both_spellings():
    assert parse("--iptables-sync-period", "2h22m").iptables_sync_period == timedelta(hours=2, minutes=22)
    assert parse("--ipvs-sync-period=500ms").ipvs_sync_period == timedelta(milliseconds=500)


@pytest.mark.parametrize("argv,message", [
    (["--bgp-holdtime=1s"], '--bgp-holdtime: "1s" is below 3s'),
    (["--bgp-holdtime=19h"], '--bgp-holdtime: "19h0m0s" is above 18h12m16s'),
    (["--bgp-graceful-restart-time=4096s"], "--bgp-graceful-restart-time: \"1h8m16s\" is above 1h8m15s"),
    (["--bgp-graceful-restart-deferral-time=19h"], "--bgp-graceful-restart-deferral-time"),
    (["--iptables-sync-period=0s"], '--iptables-sync-period: "0s" must be greater than 0'),
    (["--cache-sync-timeout=0"], "--cache-sync-timeout"),
    (["--routes-sync-period=five"], "--routes-sync-period: 'five': invalid duration"),
    (["--health-port=70000"], "--health-port: '70000': '70000' is out of range for uint16"),
    (["--peer-router-multihop-ttl=256"], "--peer-router-multihop-ttl"),
    (["--overlay-type=mesh"], "--overlay-type: 'mesh' is not one of subnet, full"),
    (["--service-node-port-range=32767-30000"], "--service-node-port-range"),
    (["--service-cluster-ip-range=10.96.0.0/99"], "--service-cluster-ip-range: '10.96.0.0/99'"),
    (["--peer-router-ips=10.0.0.1,nope"], "--peer-router-ips"),
    (["--metrics-path=metrics"], "--metrics-path: 'metrics': must start with /"),
    (["--master=127.0.0.1:8080"], "--master"),
    (["--no-such-flag"], "unknown flag: --no-such-flag"),
    (["--kubeconfig"], "flag needs an argument: --kubeconfig"),
    (["-x"], "unknown shorthand flag: 'x'"),
    (["--enable-ipv4=false"], "at least one IP family"),
])
def test_errors_name_the_flag_and_value(argv, message):
    with pytest.raises(cfg.FlagError) as err:
        parse(*argv)
    assert message.replace('"', "'") in str(err.value).replace('"', "'")


def test_slices_comma_and_repeated():
    c = parse("--peer-router-ips=192.0.2.1,192.0.2.2", "--peer-router-ips", "2001:db8::1",
              "--peer-router-asns=64512,64513", "--peer-router-asns=64514",
              "--service-external-ip-range=198.51.100.0/24",
              "--service-external-ip-range=203.0.113.0/24")
    assert c.peer_router_ips == tuple(map(ipaddress.ip_address, ["192.0.2.1", "192.0.2.2", "2001:db8::1"]))
    assert c.peer_router_asns == (64512, 64513, 64514)
    assert [str(n) for n in c.service_external_ip_range] == ["198.51.100.0/24", "203.0.113.0/24"]


def test_slice_given_replaces_default():
    c = parse("--service-cluster-ip-range=10.0.0.0/16,fd00::/108")
    assert [str(n) for n in c.service_cluster_ip_range] == ["10.0.0.0/16", "fd00::/108"]


def test_scalar_repeated_keeps_last_and_kubeconfig_forms():
    assert parse("--kubeconfig", "/a", "--kubeconfig=/b").kubeconfig == "/b"
    assert parse("--kubeconfig", "/etc/kube.conf").kubeconfig == "/etc/kube.conf"


def test_node_port_range_hyphen_or_colon():
    assert parse("--service-node-port-range=30000:31000").service_node_port_range == (30000, 31000)
    assert parse("--service-node-port-range=20000-20100").service_node_port_range == (20000, 20100)


@pytest.mark.parametrize("argv,level", [(["-v", "3"], 3), (["-v=4"], 4), (["-v5"], 5), (["--v=2"], 2)])
def test_verbosity_forms(argv, level):
    assert parse(*argv).v == level


@pytest.mark.parametrize("argv,action", [(["-h"], "help"), (["--help"], "help"),
                                         (["-V"], "version"), (["--version"], "version"),
                                         (["--master=http://x:1", "--help"], "help")])
def test_help_and_version(argv, action):
    assert cli.parse_args(argv) == (None, action)


def test_help_lists_every_flag_with_default(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cfg.FLAGS:
        assert f"--{name}" in out
    assert "(default 5m0s)" in out and "-V, --version" in out


def test_config_is_immutable():
    c = cfg.Config()
    with pytest.raises(AttributeError):
        c.run_router = False


# ---- features this build does not have are refused, never ignored -------------

ALL_OFF = ["--run-firewall=false", "--run-router=false", "--run-service-proxy=false"]


def test_defaults_are_accepted_now_that_every_controller_exists():
    config = parse()
    assert cfg.check_features(config) == []
    assert set(config.enabled_controllers()) == {cfg.FIREWALL, cfg.ROUTER, cfg.PROXY}


def test_seed_command_line_is_accepted():
    config = parse("--master=http://127.0.0.1:8080", "--run-firewall=true",
                   "--run-service-proxy=false", "--run-router=false")
    assert cfg.check_features(config) == []
    assert config.enabled_controllers() == (cfg.FIREWALL,)


def test_unbuilt_controller_is_refused_naming_what_exists():
    problems = cfg.check_features(parse("--run-loadbalancer=true"))
    assert problems == ["--run-loadbalancer=true: the LoadBalancer IP allocator controller is not "
                        "implemented in this build (controllers available: firewall, router, "
                        "service-proxy); pass --run-loadbalancer=false"]


@pytest.mark.parametrize("flag", ["--override-nexthop", "--runtime-endpoint=/run/containerd.sock"])
def test_flags_whose_feature_is_not_built_are_refused(flag):
    problems = cfg.check_features(parse(flag))
    name = flag.split("=")[0]
    assert len(problems) == 1 and problems[0].startswith(name + "=") and "not implemented" in problems[0]


def test_router_flags_that_are_built_are_accepted():
    assert cfg.check_features(parse(
        "--run-service-proxy=false", "--cluster-asn=65000", "--peer-router-ips=192.0.2.1",
        "--peer-router-asns=65100", "--overlay-type=full", "--routes-sync-period=1m",
        "--bgp-graceful-restart")) == []


def test_cleanup_config_needs_no_controller_and_ignores_the_run_flags():
    assert cfg.check_features(parse("--cleanup-config")) == []
    assert cfg.check_features(parse("--cleanup-config", *ALL_OFF)) == []


def test_no_controller_enabled_is_an_error():
    problems = cfg.check_features(parse(*ALL_OFF))
    assert len(problems) == 1 and problems[0].startswith("no controller is enabled")
    assert "--run-loadbalancer=true" in problems[0] and "available in this build: firewall, router, service-proxy" in problems[0]


@pytest.mark.parametrize("flag", ["--enable-pprof", "--loadbalancer-ip-range=192.0.2.0/24",
                                  "--loadbalancer-sync-period=2m"])
def test_feature_flag_of_unbuilt_controller_refused(flag):
    problems = cfg.check_features(parse(*ALL_OFF, flag))
    name = flag.split("=")[0]
    assert any(p.startswith(name + "=") and "none of them is implemented" in p for p in problems)


def test_feature_flag_at_default_is_fine_and_implemented_controller_accepted():
    config = parse("--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
                   "--iptables-sync-period=1m", "--hairpin-mode=false")
    assert cfg.check_features(config, implemented=frozenset({cfg.FIREWALL})) == []
    # the proxy's flag still is refused while only the firewall exists
    config = parse("--run-router=false", "--run-service-proxy=false", "--masquerade-all")
    assert any("--masquerade-all" in p for p in cfg.check_features(config, frozenset({cfg.FIREWALL})))


def test_every_flag_is_core_or_belongs_to_a_known_feature():
    known = set(cfg.CONTROLLER_FLAGS) | {cfg.CLEANUP, cfg.PPROF}
    for name, field in cfg.FLAGS.items():
        assert set(field.metadata["used_by"]) <= known, name


def test_main_exit_codes(capsys):
    assert cli.main(["--bgp-holdtime=1s"]) == 2
    assert "--bgp-holdtime" in capsys.readouterr().err
    assert cli.main(ALL_OFF) == 1
    assert "no controller is enabled" in capsys.readouterr().err
    assert cli.main(["--run-loadbalancer=true"]) == 1
    assert "controllers available: firewall, router, service-proxy" in capsys.readouterr().err


from hypothesis import given, strategies as st  # noqa: E402


@given(st.integers(min_value=0, max_value=10 * 24 * 3600 * 1000))
def test_duration_format_parse_round_trip(ms):
    d = timedelta(milliseconds=ms)
    assert cfg.parse_duration(cfg.format_duration(d)) == d
