"""Every iptables chain name and mark bit the CNI plugins use.

Top-level names are shared by every container on a node and by the reference
portmap plugin (same names, same rules), so a node can move between the two
without leaving a second set of hostPort chains behind.
Per-container names are a prefix plus a truncated hash of what identifies the
attachment (container ID and interface name), so DEL can find them from the
CNI_* environment alone — no prevResult, no netns needed.
"""
from __future__ import annotations

try:
    # hashlib's import loads OpenSSL (~2.5 ms); the built-in sha256 is all we need.
    from _sha256 import sha256
except ImportError:  # a Python built without it
    from hashlib import sha256

from lowlevel import limits

CHAIN_NAME_MAX = limits.CHAIN_NAME_MAX

# never change: upgrades depend on it
HOSTPORT_DNAT_CHAIN = "CNI-HOSTPORT-DNAT"
# never change: upgrades depend on it
HOSTPORT_SETMARK_CHAIN = "CNI-HOSTPORT-SETMARK"
# never change: upgrades depend on it
HOSTPORT_MASQ_CHAIN = "CNI-HOSTPORT-MASQ"
# never change: upgrades depend on it (DEL finds an older ADD's chain by it)
PORTMAP_DNAT_PREFIX = "KRT-DN-"

# never change: upgrades depend on it (the rule text is matched to find ours)
HOSTPORT_SETMARK_COMMENT = "CNI portfwd masquerade mark"
# never change: upgrades depend on it
HOSTPORT_MASQ_COMMENT = "CNI portfwd requiring masquerade"

# The reference plugin's default: bit 13 (0x2000), kube-proxy's masquerade bit
# is 14, so both can live on one node.
DEFAULT_MASQ_MARK_BIT = 13
MARK_BIT_MAX = 31

_HASH_CHARS = CHAIN_NAME_MAX - len(PORTMAP_DNAT_PREFIX)


ensure_chain_name = limits.check_chain_name


def hashed_chain(prefix: str, *parts: str, length: int | None = None) -> str:
    """``prefix`` + hex digest of ``parts``, as long as the 28-character limit allows."""
    room = CHAIN_NAME_MAX - len(prefix)
    if room < 8:
        raise ValueError(f"prefix {prefix!r} leaves fewer than 8 hash characters")
    length = room if length is None else min(length, room)
    digest = sha256("\0".join(parts).encode()).hexdigest()
    return ensure_chain_name(prefix + digest[:length])


def portmap_dnat_chain(container_id: str, ifname: str) -> str:
    """The per-attachment DNAT chain: one per (container, interface)."""
    return hashed_chain(PORTMAP_DNAT_PREFIX, container_id, ifname)


def is_portmap_dnat_chain(name: str) -> bool:
    return (name.startswith(PORTMAP_DNAT_PREFIX)
            and len(name) == len(PORTMAP_DNAT_PREFIX) + _HASH_CHARS)


def mark_mask(bit: int) -> str:
    """The ``value/mask`` text of a single mark bit, as iptables-save prints it."""
    if not 0 <= bit <= MARK_BIT_MAX:
        raise ValueError(f"mark bit {bit} is outside 0..{MARK_BIT_MAX}")
    value = 1 << bit
    return f"{value:#x}/{value:#x}"


# never change: upgrades depend on it. bridge's ipMasq chain, named as the
# reference's ip.SetupIPMasq names it, so a node can switch plugins.
IPMASQ_CHAIN_PREFIX = "CNI-"


def ipmasq_chain(network: str, container_id: str) -> tuple[str, str]:
    """bridge ipMasq's per-container nat chain and rule comment, as the reference names them."""
    import hashlib  # sha512 is not built in separately; ipMasq is off by default
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    return IPMASQ_CHAIN_PREFIX + digest[:24], f'name: "{network}" id: "{container_id}"'
