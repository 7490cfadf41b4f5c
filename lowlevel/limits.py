"""The kernel's limits on the names we give things, checked in one place."""
from __future__ import annotations

# iptables rejects chain names of 29 characters or more (XT_EXTENSION_MAXNAMELEN is 29
# including the NUL); nf_tables would take longer ones, iptables-save could not print them.
CHAIN_NAME_MAX = 28
# ipset: IPSET_MAXNAMELEN is 32 including the NUL.
SET_NAME_MAX = 31


def check_chain_name(name: str) -> str:
    """``name`` if iptables accepts it as a chain name, else ValueError saying why."""
    if not name or len(name) > CHAIN_NAME_MAX:
        raise ValueError(f"iptables chain name {name!r} has {len(name)} characters: "
                         f"the kernel allows 1 to {CHAIN_NAME_MAX}")
    if name.startswith("-") or any(c.isspace() or c in "\"'!" for c in name):
        raise ValueError(f"iptables chain name {name!r} must not start with '-' "
                         "or contain blanks, quotes or '!'")
    return name


def check_length(name: str, limit: int, what: str) -> str:
    if len(name) > limit:
        raise ValueError(f"{what} name {name!r} is longer than {limit} characters")
    return name
