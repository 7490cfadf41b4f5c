"""kube-router-portmap's configuration: runtimeConfig.portMappings and the options of
the reference plugin (containernetworking/plugins meta/portmap), parsed and checked, pure.
"""
from __future__ import annotations

from cni import names, skel
from cni.record import Record
from cni.skel import CniError
from lowlevel import ipnet

PROTOCOLS = ("tcp", "udp", "sctp")


class PortMapping(Record):
    __slots__ = ("host_port", "container_port", "protocol", "host_ip")
    _defaults = {"protocol": "tcp", "host_ip": ""}


class Conf(Record):
    """``conditions``: (conditionsV4, conditionsV6), each a tuple of iptables arguments."""
    __slots__ = ("name", "mappings", "snat", "masq_all", "mark_bit", "external_setmark_chain",
                 "conditions")
    _defaults = {"name": "", "mappings": (), "snat": True, "masq_all": False,
                 "mark_bit": names.DEFAULT_MASQ_MARK_BIT, "external_setmark_chain": "",
                 "conditions": ((), ())}


def _invalid(key: str, value) -> CniError:
    return CniError(skel.INVALID_CONFIG, f"invalid value for {key!r}: {value!r}")


def _port(entry: dict, key: str) -> int:
    value = entry.get(key.lower())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 65535:
        raise _invalid(f"portMappings.{key}", value)
    return value


def parse_mapping(raw) -> PortMapping:
    """One runtimeConfig.portMappings entry; keys are case-insensitive (containerd capitalises)."""
    if not isinstance(raw, dict):
        raise _invalid("portMappings", raw)
    entry = {str(k).lower(): v for k, v in raw.items()}
    protocol = entry.get("protocol") or "tcp"
    if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
        raise _invalid("portMappings.protocol", protocol)
    host_ip = entry.get("hostip") or ""
    if not isinstance(host_ip, str):
        raise _invalid("portMappings.hostIP", host_ip)
    if host_ip:
        try:
            # A zone (fe80::1%eth0) parses but iptables cannot match on it.
            if "%" in host_ip:
                raise ValueError(host_ip)
            host_ip = str(ipnet.ip_address(host_ip))
        except ValueError:
            raise _invalid("portMappings.hostIP", host_ip) from None
    return PortMapping(_port(entry, "hostPort"), _port(entry, "containerPort"),
                       protocol.lower(), host_ip)


def _conditions(conf: dict, key: str) -> tuple[str, ...]:
    value = conf.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(key, value)
    # Each entry becomes one argument of a line in the restore file: a control
    # character (a newline above all) would end that line and start another rule.
    if any(not v.isprintable() for v in value):
        raise _invalid(key, value)
    return tuple(value)


def _flag(conf: dict, key: str, default: bool) -> bool:
    value = conf.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(key, value)
    return value


def parse_config(conf: dict) -> Conf:
    """The plugin's configuration; CniError code 7 naming key and value when invalid."""
    runtime = conf.get("runtimeConfig")
    runtime = {} if runtime is None else runtime
    if not isinstance(runtime, dict):
        raise _invalid("runtimeConfig", runtime)
    raw_maps = runtime.get("portMappings")
    raw_maps = [] if raw_maps is None else raw_maps
    if not isinstance(raw_maps, list):
        raise _invalid("portMappings", raw_maps)
    mark_bit, external = conf.get("markMasqBit"), conf.get("externalSetMarkChain")
    if mark_bit is not None and external is not None:
        raise CniError(skel.INVALID_CONFIG,
                       "cannot specify both 'externalSetMarkChain' and 'markMasqBit'")
    if mark_bit is None:
        mark_bit = names.DEFAULT_MASQ_MARK_BIT
    if isinstance(mark_bit, bool) or not isinstance(mark_bit, int) or not (
            0 <= mark_bit <= names.MARK_BIT_MAX):
        raise _invalid("markMasqBit", mark_bit)
    if external is not None:
        try:
            names.ensure_chain_name(external if isinstance(external, str) else "")
        except ValueError:
            raise _invalid("externalSetMarkChain", external) from None
    name = conf.get("name") or ""
    return Conf(name=name if isinstance(name, str) else "",
                mappings=tuple(parse_mapping(m) for m in raw_maps),
                snat=_flag(conf, "snat", True), masq_all=_flag(conf, "masqAll", False),
                mark_bit=mark_bit, external_setmark_chain=external or "",
                conditions=(_conditions(conf, "conditionsV4"),
                            _conditions(conf, "conditionsV6")))


def container_nets(prev_result: dict | None) -> dict[int, ipnet.Interface]:
    """The first IPv4 and first IPv6 address of the container, with their prefix."""
    nets: dict = {}
    for ip in (prev_result or {}).get("ips") or []:
        try:
            iface = ipnet.ip_interface(ip["address"])
        except (KeyError, TypeError, ValueError):
            raise CniError(skel.INVALID_CONFIG,
                           f"invalid value for 'prevResult.ips': {ip!r}") from None
        nets.setdefault(iface.version, iface)
    return nets
