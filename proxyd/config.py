"""kube-router's flags as one immutable, typed Config.

Every flag is a field of ``Config``; its metadata carries the flag's Go type
(``kind``), its help text and the controllers that use it. The command line
parser (cli.py) and the feature gate (``check_features``) both read that one
table, so a flag is described exactly once.

Bind addresses ``--health-addr`` and ``--metrics-addr`` are ours (kube-router
binds all addresses); their default "" keeps that behaviour.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
from datetime import timedelta
from typing import Any, Mapping, Sequence

from proxyd import controllers
from proxyd.controllers import FIREWALL, LOADBALANCER, PROXY, ROUTER

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The controllers kube-router can run, keyed by the flag that enables each: controllers.py.
CONTROLLER_FLAGS = {row.key: row.flag for row in controllers.SWITCHED}
CONTROLLER_TITLES = {row.key: row.title for row in controllers.SWITCHED}
# Modes of the daemon that are not controllers.
CLEANUP, PPROF = "cleanup-config", "pprof"

# Which features this build implements: the built controllers, and --cleanup-config.
IMPLEMENTED: frozenset[str] = frozenset({row.key for row in controllers.SWITCHED if row.built}
                                        | {CLEANUP})

_ALL3 = (FIREWALL, ROUTER, PROXY)
# Flags of kube-router's that no controller of this build acts on: controllers.py says why.
UNBUILT_FLAGS = {flag: why for row in controllers.REGISTRY
                 for flag, why in row.unbuilt_flags().items()}


class FlagError(ValueError):
    """A flag's value cannot be used; the message names the flag and value."""


# ---- Go value syntax -------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_UINT_BITS = {"uint8": 8, "uint16": 16, "uint32": 32, "uint": 64}


def parse_duration(text: str) -> timedelta:
    """Go's time.ParseDuration: "90s", "1m0s", "2h22m", "1h30m10s500ms", "0"."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return timedelta(0)
    pos, seconds = 0, 0.0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    return timedelta(seconds=-seconds if text.startswith("-") else seconds)


def format_duration(d: timedelta) -> str:
    """Go's Duration.String(): 5m0s, 1m30s, 500ms, 0s."""
    total = d.total_seconds()
    if total == 0:
        return "0s"
    if abs(total) < 1:
        return f"{total * 1000:.9g}ms"
    sign, total = ("-" if total < 0 else ""), abs(total)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    out = (f"{int(h)}h" if h else "") + (f"{int(m)}m" if h or m else "")
    return f"{sign}{out}{s:.9g}s"


def parse_bool(text: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}")


def parse_uint(text: str, kind: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"invalid {kind} {text!r}") from None
    if not 0 <= value < 1 << _UINT_BITS[kind]:
        raise ValueError(f"{text!r} is out of range for {kind}")
    return value


def _flag(default: Any, kind: str, help: str, *used_by: str, **checks: Any):
    meta = {"kind": kind, "help": help, "used_by": used_by, **checks}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _d(text: str) -> timedelta:
    return parse_duration(text)


def _nets(*cidrs: str) -> tuple:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


@dataclasses.dataclass(frozen=True)
class Config:
    advertise_cluster_ip: bool = _flag(False, "bool", "Add Cluster IP of the service to the RIB so that it gets advertises to the BGP peers.", ROUTER)
    advertise_external_ip: bool = _flag(False, "bool", "Add External IP of service to the RIB so that it gets advertised to the BGP peers.", ROUTER)
    advertise_loadbalancer_ip: bool = _flag(False, "bool", "Add LoadbBalancer IP of service status as set by the LB provider to the RIB so that it gets advertised to the BGP peers.", ROUTER)
    advertise_pod_cidr: bool = _flag(True, "bool", "Add Node's POD cidr to the RIB so that it gets advertised to the BGP peers.", ROUTER)
    auto_mtu: bool = _flag(True, "bool", "Auto detect and set the largest possible MTU for kube-bridge and pod interfaces.", ROUTER)
    bgp_graceful_restart: bool = _flag(False, "bool", "Enables the BGP Graceful Restart capability so that routes are preserved on unexpected restarts", ROUTER)
    bgp_graceful_restart_deferral_time: timedelta = _flag(_d("360s"), "duration", "BGP Graceful restart deferral time according to RFC4724 4.1, maximum 18h.", ROUTER, max=_d("18h"))
    bgp_graceful_restart_time: timedelta = _flag(_d("90s"), "duration", "BGP Graceful restart time according to RFC4724 3, maximum 4095s.", ROUTER, max=_d("4095s"))
    bgp_holdtime: timedelta = _flag(_d("90s"), "duration", "This parameter is mainly used to modify the holdtime declared to BGP peer. When Kube-router goes down abnormally, the local saving time of BGP route will be affected. Holdtime must be in the range 3s to 18h12m16s.", ROUTER, min=_d("3s"), max=_d("18h12m16s"))
    bgp_port: int = _flag(179, "uint32", "The port open for incoming BGP connections and to use for connecting with other BGP peers.", ROUTER)
    cache_sync_timeout: timedelta = _flag(_d("1m"), "duration", "The timeout for cache synchronization (e.g. '5s', '1m'). Must be greater than 0.", positive=True)
    cleanup_config: bool = _flag(False, "bool", "Cleanup iptables rules, ipvs, ipset configuration and exit.", CLEANUP)
    cluster_asn: int = _flag(0, "uint", "ASN number under which cluster nodes will run iBGP.", ROUTER)
    disable_source_dest_check: bool = _flag(True, "bool", "Disable the source-dest-check attribute for AWS EC2 instances. When this option is false, it must be set some other way.", ROUTER)
    enable_cni: bool = _flag(True, "bool", "Enable CNI plugin. Disable if you want to use kube-router features alongside another CNI plugin.", ROUTER)
    enable_ibgp: bool = _flag(True, "bool", "Enables peering with nodes with the same ASN, if disabled will only peer with external BGP peers", ROUTER)
    enable_ipv4: bool = _flag(True, "bool", "Enables IPv4 support", *_ALL3)
    enable_ipv6: bool = _flag(False, "bool", "Enables IPv6 support", *_ALL3)
    enable_overlay: bool = _flag(True, "bool", "When enable-overlay is set to true, IP-in-IP tunneling is used for pod-to-pod networking across nodes in different subnets. When set to false no tunneling is used and routing infrastructure is expected to route traffic for pod-to-pod networking across nodes in different subnets", ROUTER)
    enable_pod_egress: bool = _flag(True, "bool", "SNAT traffic from Pods to destinations outside the cluster.", ROUTER)
    enable_pprof: bool = _flag(False, "bool", "Enables pprof for debugging performance and memory leak issues.", PPROF)
    excluded_cidrs: tuple[IPNetwork, ...] = _flag((), "stringSlice", "Excluded CIDRs are used to exclude IPVS rules from deletion.", PROXY, parse="cidr")
    gobgp_admin_port: int = _flag(50051, "uint16", "Port to connect to GoBGP for administrative purposes. Setting this to 0 will disable the GoBGP gRPC server.", ROUTER)
    hairpin_mode: bool = _flag(False, "bool", "Add iptables rules for every Service Endpoint to support hairpin traffic.", PROXY)
    health_addr: str = _flag("", "string", "Address the health check endpoint binds to (default: all addresses).", parse="bind")
    health_port: int = _flag(20244, "uint16", "Health check port, 0 = Disabled")
    hostname_override: str = _flag("", "string", "Overrides the NodeName of the node. Set this if kube-router is unable to determine your NodeName automatically.")
    injected_routes_sync_period: timedelta = _flag(_d("60s"), "duration", "The delay between route table synchronizations (e.g. '5s', '1m', '2h22m'). Must be greater than 0.", ROUTER, positive=True)
    iptables_sync_period: timedelta = _flag(_d("5m"), "duration", "The delay between iptables rule synchronizations (e.g. '5s', '1m'). Must be greater than 0.", FIREWALL, positive=True)
    ipvs_graceful_period: timedelta = _flag(_d("30s"), "duration", "The graceful period before removing destinations from IPVS services (e.g. '5s', '1m', '2h22m'). Must be greater than 0.", PROXY)
    ipvs_graceful_termination: bool = _flag(False, "bool", "Enables the experimental IPVS graceful terminaton capability", PROXY)
    ipvs_permit_all: bool = _flag(True, "bool", "Enables rule to accept all incoming traffic to service VIP's on the node.", PROXY)
    ipvs_sync_period: timedelta = _flag(_d("5m"), "duration", "The delay between ipvs config synchronizations (e.g. '5s', '1m', '2h22m'). Must be greater than 0.", PROXY, positive=True)
    kubeconfig: str = _flag("", "string", "Path to kubeconfig file with authorization information (the master location is set by the master flag).")
    loadbalancer_default_class: bool = _flag(True, "bool", "Handle loadbalancer services without a class", LOADBALANCER)
    loadbalancer_ip_range: tuple[IPNetwork, ...] = _flag((), "stringSlice", "CIDR values from which loadbalancer services addresses are assigned (can be specified multiple times)", LOADBALANCER, parse="cidr")
    loadbalancer_sync_period: timedelta = _flag(_d("1m"), "duration", "The delay between checking for missed services (e.g. '5s', '1m'). Must be greater than 0.", LOADBALANCER, positive=True)
    masquerade_all: bool = _flag(False, "bool", "SNAT all traffic to cluster IP/node port.", PROXY)
    master: str = _flag("", "string", "The address of the Kubernetes API server (overrides any value in kubeconfig).", parse="url")
    metrics_addr: str = _flag("", "string", "Prometheus metrics address to listen on (default: all addresses).", parse="bind")
    metrics_path: str = _flag("/metrics", "string", "Prometheus metrics path", parse="path")
    metrics_port: int = _flag(0, "uint16", "Prometheus metrics port, (Default 0, Disabled)")
    nodeport_bindon_all_ip: bool = _flag(False, "bool", "For service of NodePort type create IPVS service that listens on all IP's of the node.", PROXY)
    nodes_full_mesh: bool = _flag(True, "bool", "Each node in the cluster will setup BGP peering with rest of the nodes.", ROUTER)
    overlay_type: str = _flag("subnet", "string", "Possible values: subnet,full - When set to \"subnet\", the default, default \"--enable-overlay=true\" behavior is used. When set to \"full\", it changes \"--enable-overlay=true\" default behavior so that IP-in-IP tunneling is used for pod-to-pod networking across nodes regardless of the subnet the nodes are in.", ROUTER, choices=("subnet", "full"))
    override_nexthop: bool = _flag(False, "bool", "Override the next-hop in bgp routes sent to peers with the local ip.", ROUTER)
    peer_router_asns: tuple[int, ...] = _flag((), "uintSlice", "ASN numbers of the BGP peer to which cluster nodes will advertise cluster ip and node's pod cidr.", ROUTER)
    peer_router_ips: tuple[IPAddress, ...] = _flag((), "ipSlice", "The ip address of the external router to which all nodes will peer and advertise the cluster ip and pod cidr's.", ROUTER)
    peer_router_multihop_ttl: int = _flag(0, "uint8", "Enable eBGP multihop supports -- sets multihop-ttl. (Relevant only if ttl >= 2)", ROUTER)
    peer_router_passwords: tuple[str, ...] = _flag((), "stringSlice", "Password for authenticating against the BGP peer defined with \"--peer-router-ips\".", ROUTER)
    peer_router_ports: tuple[int, ...] = _flag((), "uintSlice", "The remote port of the external BGP to which all nodes will peer. If not set, default BGP port (179) will be used.", ROUTER)
    router_id: str = _flag("", "string", "BGP router-id. Must be specified in a ipv6 only cluster, \"generate\" can be specified to generate the router id.", ROUTER)
    routes_sync_period: timedelta = _flag(_d("5m"), "duration", "The delay between route updates and advertisements (e.g. '5s', '1m', '2h22m'). Must be greater than 0.", ROUTER, positive=True)
    run_firewall: bool = _flag(True, "bool", "Enables Network Policy -- sets up iptables to provide ingress firewall for pods.", FIREWALL)
    run_loadbalancer: bool = _flag(False, "bool", "Enable loadbalancer address allocator", LOADBALANCER)
    run_router: bool = _flag(True, "bool", "Enables Pod Networking -- Advertises and learns the routes to Pods via iBGP.", ROUTER)
    run_service_proxy: bool = _flag(True, "bool", "Enables Service Proxy -- sets up IPVS for Kubernetes Services.", PROXY)
    runtime_endpoint: str = _flag("", "string", "Path to CRI compatible container runtime socket (used for DSR mode). Currently known working with containerd.", PROXY)
    service_cluster_ip_range: tuple[IPNetwork, ...] = _flag(_nets("10.96.0.0/12"), "stringSlice", "CIDR values from which service cluster IPs are assigned (can be specified up to 2 times)", *_ALL3, parse="cidr", max_items=2)
    service_external_ip_range: tuple[IPNetwork, ...] = _flag((), "stringSlice", "Specify external IP CIDRs that are used for inter-cluster communication (can be specified multiple times)", *_ALL3, parse="cidr")
    service_node_port_range: tuple[int, int] = _flag((30000, 32767), "string", "NodePort range specified with either a hyphen or colon", FIREWALL, PROXY, parse="port_range")
    service_tcp_timeout: timedelta = _flag(_d("0s"), "duration", "Specify TCP timeout for IPVS services in standard duration syntax (e.g. '5s', '1m'), default 0s preserves default system value", PROXY)
    service_tcpfin_timeout: timedelta = _flag(_d("0s"), "duration", "Specify TCP FIN timeout for IPVS services in standard duration syntax (e.g. '5s', '1m'), default 0s preserves default system value", PROXY)
    service_udp_timeout: timedelta = _flag(_d("0s"), "duration", "Specify UDP timeout for IPVS services in standard duration syntax (e.g. '5s', '1m'), default 0s preserves default system value", PROXY)
    strict_external_ip_validation: bool = _flag(True, "bool", "Reject Services whose external IPs fall outside --service-external-ip-range.", PROXY)
    v: int = _flag(0, "string", "log level for V logs", parse="level")

    def families(self) -> tuple[int, ...]:
        """The IP families enabled, 4 before 6."""
        return tuple(f for f, on in ((4, self.enable_ipv4), (6, self.enable_ipv6)) if on)

    def enabled_controllers(self) -> tuple[str, ...]:
        return tuple(c for c, flag in CONTROLLER_FLAGS.items() if getattr(self, _attr(flag)))


def _attr(flag: str) -> str:
    return flag.replace("-", "_")


def flag_name(field: dataclasses.Field) -> str:
    return field.name.replace("_", "-")


FLAGS: dict[str, dataclasses.Field] = {flag_name(f): f for f in dataclasses.fields(Config)}


def format_default(field: dataclasses.Field) -> str:
    return format_value(field, field.default)


def format_value(field: dataclasses.Field, value: Any) -> str:
    """A value as the Go flag would print it."""
    if field.metadata["kind"] == "duration":
        return format_duration(value)
    if field.metadata.get("parse") == "port_range":
        return f"{value[0]}-{value[1]}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


# ---- raw strings -> Config ---------------------------------------------------

def build_config(raw: Mapping[str, Sequence[str]]) -> Config:
    """Turn the parser's raw values (flag name -> every string given) into a Config."""
    values = {}
    for name, texts in raw.items():
        field = FLAGS.get(name)
        if field is None:
            raise FlagError(f"unknown flag: --{name}")
        try:
            values[field.name] = _convert(field, list(texts))
        except ValueError as e:
            shown = ",".join(texts)
            raise FlagError(f"--{name}: {shown!r}: {e}") from None
    config = Config(**values)
    validate(config)
    return config


def _convert(field: dataclasses.Field, texts: list[str]) -> Any:
    kind = field.metadata["kind"]
    if kind.endswith("Slice"):
        items = [item.strip() for text in texts for item in text.split(",") if item.strip()]
        return tuple(_convert_one(field, kind[:-5], item) for item in items)
    return _convert_one(field, kind, texts[-1])


def _convert_one(field: dataclasses.Field, kind: str, text: str) -> Any:
    parse = field.metadata.get("parse")
    if kind == "bool":
        return parse_bool(text)
    if kind == "duration":
        return parse_duration(text)
    if kind in _UINT_BITS:
        return parse_uint(text, kind)
    if kind == "ip":
        return ipaddress.ip_address(text)
    if parse == "cidr":
        return ipaddress.ip_network(text, strict=False)
    if parse == "port_range":
        return _port_range(text)
    if parse == "level":
        level = int(text)
        if level < 0:
            raise ValueError("log level must be >= 0")
        return level
    if parse == "bind" and text:
        return str(ipaddress.ip_address(text))
    if parse == "url" and text and not re.match(r"^https?://[^/]+", text):
        raise ValueError("expected http(s)://host[:port]")
    if parse == "path" and not text.startswith("/"):
        raise ValueError("must start with /")
    return text


def _port_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\s*[-:]\s*(\d+)", text.strip())
    if not m:
        raise ValueError("expected LOW-HIGH or LOW:HIGH")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not 0 < lo < hi <= 65535:
        raise ValueError("expected 0 < LOW < HIGH <= 65535")
    return lo, hi


def validate(config: Config) -> None:
    """Range checks that span a flag's value (conversion already checked syntax)."""
    for name, field in FLAGS.items():
        value, meta = getattr(config, field.name), field.metadata
        if value == field.default:
            continue
        if meta.get("positive") and value <= timedelta(0):
            raise FlagError(f"--{name}: {format_duration(value)!r} must be greater than 0")
        if "min" in meta and value < meta["min"]:
            raise FlagError(f"--{name}: {format_duration(value)!r} is below {format_duration(meta['min'])}")
        if "max" in meta and value > meta["max"]:
            raise FlagError(f"--{name}: {format_duration(value)!r} is above {format_duration(meta['max'])}")
        if "choices" in meta and value not in meta["choices"]:
            raise FlagError(f"--{name}: {value!r} is not one of {', '.join(meta['choices'])}")
        if "max_items" in meta and len(value) > meta["max_items"]:
            raise FlagError(f"--{name}: at most {meta['max_items']} values (one per IP family)")
    if not (config.enable_ipv4 or config.enable_ipv6):
        raise FlagError("--enable-ipv4=false and --enable-ipv6=false: at least one IP family must be enabled")


# ---- which features this build has ------------------------------------------

def check_features(config: Config, implemented: frozenset[str] = IMPLEMENTED) -> list[str]:
    """Every reason this Config asks for something the build does not do.

    A controller's run-* flag set to true is refused while that controller is
    not implemented, and so is any flag only unimplemented features read,
    when it differs from its default: nothing is silently ignored.
    """
    problems = []
    available = ", ".join(sorted(implemented & set(CONTROLLER_FLAGS))) or "none yet"
    if config.cleanup_config and CLEANUP in implemented:
        return []      # removes what this build creates, then exits: no controller runs
    enabled = config.enabled_controllers()
    for controller in enabled:
        if controller not in implemented:
            flag = CONTROLLER_FLAGS[controller]
            problems.append(
                f"--{flag}=true: the {CONTROLLER_TITLES[controller]} controller is not implemented"
                f" in this build (controllers available: {available}); pass --{flag}=false")
    for name, field in FLAGS.items():
        used_by = field.metadata["used_by"]
        if name in CONTROLLER_FLAGS.values() or not used_by:
            continue
        why = UNBUILT_FLAGS.get(name)
        if why and getattr(config, field.name) != field.default:
            problems.append(f"--{name}={format_value(field, getattr(config, field.name))}: "
                            f"not implemented in this build ({why} is not built yet)")
            continue
        if getattr(config, field.name) != field.default and not implemented & set(used_by):
            problems.append(
                f"--{name}={format_value(field, getattr(config, field.name))}: only "
                f"{' / '.join(used_by)} use this flag and none of them is implemented in this build")
    if not enabled:
        problems.append(
            "no controller is enabled: set at least one of "
            + ", ".join(f"--{f}=true" for f in CONTROLLER_FLAGS.values())
            + f" (controllers available in this build: {available})")
    return problems
