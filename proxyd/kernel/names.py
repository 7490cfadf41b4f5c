"""Every chain, set and mark bit the daemon puts into the kernel, named in one place.

Top-level names are part of a node's state across upgrades and of what
operators grep for: never change them. They are kube-router's own names, so a
node moved over from kube-router is adopted (its KUBE-POD-FW-* chains are
recognised as ours and cleaned up) rather than left with two firewalls.

Per-object names are a prefix plus the first characters of base32(sha256(the
object's identity)) -- kube-router's scheme -- so they are stable across
restarts and fit the kernel's limits: iptables chain names hold 28
characters, ipset names 31.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress

from lowlevel import limits, localnet

CHAIN_MAX = limits.CHAIN_NAME_MAX
SET_MAX = limits.SET_NAME_MAX

# ---- network policy firewall (filter table) -- never change: upgrades depend on it
NETPOL_INPUT = "KUBE-ROUTER-INPUT"
NETPOL_FORWARD = "KUBE-ROUTER-FORWARD"
NETPOL_OUTPUT = "KUBE-ROUTER-OUTPUT"
NETPOL_TOP_CHAINS = {"INPUT": NETPOL_INPUT, "FORWARD": NETPOL_FORWARD, "OUTPUT": NETPOL_OUTPUT}
POD_INGRESS_PREFIX = "KUBE-POD-IN-"
POD_EGRESS_PREFIX = "KUBE-POD-OUT-"
POLICY_PREFIX = "KUBE-NWPLCY-"
KUBE_ROUTER_POD_FW_PREFIX = "KUBE-POD-FW-"      # kube-router's per-pod chains: adopted, removed
SOURCE_SET_PREFIX = "KUBE-SRC-"
DEST_SET_PREFIX = "KUBE-DST-"
IPV6_SET_PREFIX = "inet6:"                       # kube-router's marker for an IPv6 set's name
NETPOL_HOOK_COMMENT = "kube-router netpol"

# A packet a policy allows carries this bit while it walks a pod's chain
# (kube-router's value; kube-proxy uses 0x4000 and 0x8000).
NETPOL_ALLOW_MARK = "0x10000/0x10000"
NETPOL_CLEAR_MARK = "0x0/0x10000"
NFLOG_GROUP = 100                                # kube-router logs dropped packets here


# Per-object names are asked for again on every change that touches the object: a
# bounded memo of the hashes keeps a top chain of hundreds of pods cheap to rebuild.
@functools.lru_cache(maxsize=1 << 16)
def short_hash(*parts: str, length: int = 16) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:length]


_checked = limits.check_length


def pod_chain(namespace: str, name: str, direction: str) -> str:
    """The chain holding one local pod's ingress or egress verdict."""
    prefix = POD_INGRESS_PREFIX if direction == "ingress" else POD_EGRESS_PREFIX
    return _checked(prefix + short_hash(namespace, name, length=CHAIN_MAX - len(prefix)),
                    CHAIN_MAX, "chain")


def policy_chain(namespace: str, name: str, direction: str) -> str:
    return _checked(POLICY_PREFIX + short_hash(namespace, name, direction), CHAIN_MAX, "chain")


def policy_set(family: int, prefix: str, *identity: str) -> str:
    """An ipset of one policy rule's peers (or targets), per IP family."""
    name = prefix + short_hash(*identity)
    return _checked(IPV6_SET_PREFIX + name if family == 6 else name, SET_MAX, "ipset")


def is_netpol_chain(name: str) -> bool:
    return name in NETPOL_TOP_CHAINS.values() or name.startswith(
        (POD_INGRESS_PREFIX, POD_EGRESS_PREFIX, POLICY_PREFIX, KUBE_ROUTER_POD_FW_PREFIX))


def is_netpol_set(name: str) -> bool:
    bare = name[len(IPV6_SET_PREFIX):] if name.startswith(IPV6_SET_PREFIX) else name
    return bare.startswith((SOURCE_SET_PREFIX, DEST_SET_PREFIX))


# ---- BGP pod routing -- never change: upgrades depend on it
# kube-router's rtm_protocol (0x11) for the pod routes it injects: a node moved
# over from kube-router has its routes recognised as ours.
ROUTE_PROTOCOL = 17
TUNNEL_PREFIX = "tun-"
TUNNEL_HASH_LEN = 11
_HEX = frozenset("0123456789abcdef")


def tunnel_name(node_ip: str) -> str:
    """kube-router's ipip/ip6ip6 tunnel name for the node at ``node_ip``: "tun-" and the first
    11 hex digits of sha256(the address with "." and ":" removed). 15 characters, the
    kernel's interface name limit. IPv6 addresses are taken in compressed form, as Go prints
    them."""
    try:
        node_ip = ipaddress.ip_address(node_ip).compressed
    except ValueError:
        pass
    bare = node_ip.replace(".", "").replace(":", "")
    return TUNNEL_PREFIX + hashlib.sha256(bare.encode()).hexdigest()[:TUNNEL_HASH_LEN]


def is_tunnel_name(name: str) -> bool:
    tail = name[len(TUNNEL_PREFIX):]
    return (name.startswith(TUNNEL_PREFIX) and len(tail) == TUNNEL_HASH_LEN
            and set(tail) <= _HEX)


# ---- pod egress SNAT (nat table) -- never change: upgrades depend on it
# kube-router's set names, so a node moved over keeps one set of each.
POD_SUBNETS_SET = "kube-router-pod-subnets"
NODE_IPS_SET = "kube-router-node-ips"
POD_EGRESS_CHAIN = "KUBE-ROUTER-POD-EGRESS"
POD_EGRESS_COMMENT = "kube-router pod egress"
_EGRESS_SETS = {f + s for s in (POD_SUBNETS_SET, NODE_IPS_SET) for f in ("", IPV6_SET_PREFIX)}


def is_egress_chain(name: str) -> bool:
    return name == POD_EGRESS_CHAIN


def is_egress_set(name: str) -> bool:
    """Ours, and the temporary name each is rebuilt under before its swap."""
    from proxyd.kernel.ipset import temp_name
    return name in _EGRESS_SETS or any(name == temp_name(s) for s in _EGRESS_SETS)


# ---- IPVS service proxy -- never change: upgrades depend on it
DUMMY_IF = "kube-dummy-if"                         # kube-router's: the VIPs live here
SERVICE_SNAT_CHAIN = "KUBE-ROUTER-SERVICES-SNAT"   # nat: SNAT of IPVS-forwarded traffic
SERVICE_FILTER_CHAIN = "KUBE-ROUTER-SERVICES"      # filter INPUT: what a VIP accepts
SERVICE_HOOK_COMMENT = "kube-router service proxy"
SERVICE_VIPS_SET = "kube-router-svip"              # kube-router's set names
SERVICE_VIP_PORTS_SET = "kube-router-svip-prt"
SERVICE_POD_SUBNETS_SET = "kube-router-service-pods"
_SERVICE_SETS = {f + s for s in (SERVICE_VIPS_SET, SERVICE_VIP_PORTS_SET, SERVICE_POD_SUBNETS_SET)
                 for f in ("", IPV6_SET_PREFIX)}


def is_service_chain(name: str) -> bool:
    return name in (SERVICE_SNAT_CHAIN, SERVICE_FILTER_CHAIN)


def is_service_set(name: str) -> bool:
    from proxyd.kernel.ipset import temp_name
    return name in _SERVICE_SETS or any(name == temp_name(s) for s in _SERVICE_SETS)


# ---- the localnet guard (raw table): lowlevel/localnet.py has the rules and the plugin's copy
LOCALNET_GUARD_CHAIN = localnet.DAEMON_CHAIN     # never change: upgrades depend on it


def is_localnet_chain(name: str) -> bool:
    return name == LOCALNET_GUARD_CHAIN


def is_daemon_chain(name: str) -> bool:
    """Any chain of any controller of this daemon."""
    return (is_netpol_chain(name) or is_egress_chain(name) or is_service_chain(name)
            or is_localnet_chain(name))
