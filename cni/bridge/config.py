"""kube-router-bridge's configuration: the network configuration parsed and checked, pure.

Keys and defaults follow the reference ``bridge`` plugin of
containernetworking/plugins; the bridge defaults to ``kube-bridge``.
"""
from __future__ import annotations

from cni import netlink, skel
from cni.record import Record
from cni.skel import CniError

DEFAULT_BRIDGE = "kube-bridge"


class BridgeConf(Record):
    __slots__ = ("name", "cni_version", "bridge", "is_gateway", "is_default_gateway",
                 "force_address", "ip_masq", "mtu", "hairpin_mode", "promisc_mode", "vlan",
                 "enable_dad", "ipam", "dns", "mac")


_BOOLS = {"isGateway": False, "isDefaultGateway": False, "forceAddress": False, "ipMasq": False,
          "hairpinMode": False, "promiscMode": False, "enabledad": False, "macspoofchk": False}


def _invalid(key: str, value) -> CniError:
    return CniError(skel.INVALID_CONFIG, f"invalid value for {key!r}: {value!r}")


def _int_field(conf: dict, key: str, low: int, high: int) -> int:
    value = conf.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(key, value)
    return value


def _mac_field(key: str, value) -> str:
    try:
        raw = netlink.mac_bytes(value)
    except (ValueError, AttributeError):
        raise _invalid(key, value) from None
    if len(raw) != 6 or value.count(":") != 5:
        raise _invalid(key, value)
    return netlink.mac_str(raw)


def is_ifname(name) -> bool:
    """A link name the kernel takes (dev_valid_name): 1..15 bytes, no '/', ':', space, NUL
    (the C string would end at a NUL, naming another link); a lone surrogate cannot encode."""
    if not isinstance(name, str) or name in (".", "..") or not name.isprintable():
        return False
    try:
        return 0 < len(name.encode()) < 16 and not any(c in "/:" or c.isspace() for c in name)
    except UnicodeEncodeError:
        return False


def _pod_mac(conf: dict, cni_args: dict) -> str | None:
    # Lowest to highest priority, as the reference: CNI_ARGS MAC, args.cni.mac, runtimeConfig.mac.
    mac = None
    if cni_args.get("MAC"):
        mac = _mac_field("MAC", cni_args["MAC"])
    args = conf.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    if isinstance(cni, dict) and cni.get("mac"):
        mac = _mac_field("args.cni.mac", cni["mac"])
    runtime = conf.get("runtimeConfig")
    if isinstance(runtime, dict) and runtime.get("mac"):
        mac = _mac_field("runtimeConfig.mac", runtime["mac"])
    return mac


def parse_config(data: bytes | dict, cni_args: dict | None = None) -> BridgeConf:
    """The plugin's configuration; CniError (code 7 naming key and value) when invalid."""
    if isinstance(data, (bytes, str)):
        from cni import fastjson as json
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise CniError(skel.DECODE_FAILURE, f"failed to parse network configuration: {exc}")
    if not isinstance(data, dict):
        raise CniError(skel.DECODE_FAILURE, "network configuration is not a JSON object")
    version = data.get("cniVersion", "")
    if version not in skel.SUPPORTED_VERSIONS:
        raise CniError(skel.INCOMPATIBLE_VERSION, f"unsupported cniVersion {version!r}",
                       f"supported: {', '.join(skel.SUPPORTED_VERSIONS)}")
    flags = {}
    for key, default in _BOOLS.items():
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise _invalid(key, value)
        flags[key] = value
    if flags["macspoofchk"]:
        raise CniError(skel.UNSUPPORTED_FIELD, "'macspoofchk' is not supported")
    if flags["hairpinMode"] and flags["promiscMode"]:
        raise CniError(skel.INVALID_CONFIG,
                       "cannot set 'hairpinMode' and 'promiscMode' at the same time")
    vlan = _int_field(data, "vlan", 0, 4094)
    if vlan and (flags["isGateway"] or flags["isDefaultGateway"]):
        # The reference puts the gateway on a VLAN sub-interface of the bridge; we do not.
        raise CniError(skel.UNSUPPORTED_FIELD, "'vlan' together with 'isGateway' is not supported")
    bridge = data.get("bridge") or DEFAULT_BRIDGE
    if not is_ifname(bridge):
        raise _invalid("bridge", bridge)
    for key in ("ipam", "dns"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise _invalid(key, data[key])
    ipam_conf = data.get("ipam") or None
    if ipam_conf is not None and not isinstance(ipam_conf.get("type"), str):
        raise _invalid("ipam.type", ipam_conf.get("type"))
    return BridgeConf(
        name=data.get("name", ""), cni_version=version, bridge=bridge,
        is_gateway=flags["isGateway"] or flags["isDefaultGateway"],
        is_default_gateway=flags["isDefaultGateway"], force_address=flags["forceAddress"],
        ip_masq=flags["ipMasq"], mtu=_int_field(data, "mtu", 0, 65535),
        hairpin_mode=flags["hairpinMode"], promisc_mode=flags["promiscMode"],
        vlan=vlan, enable_dad=flags["enabledad"],
        ipam=ipam_conf, dns=data.get("dns") or None, mac=_pod_mac(data, cni_args or {}))
