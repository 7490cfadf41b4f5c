"""The ``dns`` section of a result, read from a resolv.conf file (``ipam.resolvConf``)."""
from __future__ import annotations


def parse_resolv_conf(text: str) -> dict:
    """nameserver/domain/search/options lines, as the reference plugin reads them."""
    dns: dict = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            dns.setdefault("nameservers", []).append(values[0])
        elif key == "domain":
            dns["domain"] = values[0]
        elif key == "search":
            dns.setdefault("search", []).extend(values)
        elif key == "options":
            dns.setdefault("options", []).extend(values)
    return dns
