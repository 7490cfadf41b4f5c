"""The validation the real server does that clients notice: names, labels, required fields."""
from __future__ import annotations

import re

from krsim.apiserver.errors import FieldError

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

LABEL_VALUE_HELP = ("a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character "
                    "(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
LABEL_KEY_HELP = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                  "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
                  "or '123-abc', regex used for validation is "
                  "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
# Names the kinds' validators require (pods and services are stricter than the default).
NAME_RULES = {
    "namespaces": (_DNS1123_LABEL, 63, "a lowercase RFC 1123 label must consist of lower case "
                   "alphanumeric characters or '-', and must start and end with an alphanumeric "
                   "character"),
    "services": (_DNS1035_LABEL, 63, "a DNS-1035 label must consist of lower case alphanumeric "
                 "characters or '-', start with an alphabetic character, and end with an "
                 "alphanumeric character"),
}
DEFAULT_NAME_RULE = (_DNS1123_SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain must consist of "
                     "lower case alphanumeric characters, '-' or '.', and must start and end with "
                     "an alphanumeric character")


def validate_metadata(plural: str, meta: dict) -> list[FieldError]:
    errors = []
    name = meta.get("name")
    if not name:
        errors.append(FieldError("Required", "metadata.name", "name or generateName is required"))
    else:
        pattern, limit, help_text = NAME_RULES.get(plural, DEFAULT_NAME_RULE)
        if not pattern.match(name) or len(name) > limit:
            errors.append(FieldError("Invalid", "metadata.name", help_text, name))
    errors += validate_labels(meta.get("labels") or {}, "metadata.labels")
    for key in meta.get("annotations") or {}:
        if not _valid_key(key):
            errors.append(FieldError("Invalid", "metadata.annotations", LABEL_KEY_HELP, key))
    return errors


def validate_labels(labels: dict, field: str) -> list[FieldError]:
    errors = []
    for key, value in labels.items():
        if not _valid_key(key):
            errors.append(FieldError("Invalid", field, LABEL_KEY_HELP, key))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            errors.append(FieldError("Invalid", field, LABEL_VALUE_HELP, value))
    return errors


def _valid_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))


def validate_spec(plural: str, obj: dict) -> list[FieldError]:
    spec = obj.get("spec") or {}
    if plural == "pods":
        if not spec.get("containers"):
            return [FieldError("Required", "spec.containers", "")]
        return [FieldError("Required", f"spec.containers[{i}].name", "")
                for i, c in enumerate(spec["containers"]) if not c.get("name")]
    if plural == "services":
        return _validate_service(spec)
    if plural == "endpointslices":
        if obj.get("addressType") not in ("IPv4", "IPv6", "FQDN"):
            return [FieldError("Unsupported", "addressType",
                               'supported values: "FQDN", "IPv4", "IPv6"', obj.get("addressType"))]
    return []


def _validate_service(spec: dict) -> list[FieldError]:
    errors = []
    kind = spec.get("type")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append(FieldError("Unsupported", "spec.type", 'supported values: "ClusterIP", '
                                 '"ExternalName", "LoadBalancer", "NodePort"', kind))
    if kind != "ExternalName" and not spec.get("ports") and spec.get("clusterIP") != "None":
        errors.append(FieldError("Required", "spec.ports", ""))
    for i, port in enumerate(spec.get("ports") or []):
        if not isinstance(port.get("port"), int) or not 0 < port["port"] < 65536:
            errors.append(FieldError("Invalid", f"spec.ports[{i}].port",
                                     "must be between 1 and 65535, inclusive", port.get("port")))
        if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            errors.append(FieldError("Unsupported", f"spec.ports[{i}].protocol",
                                     'supported values: "SCTP", "TCP", "UDP"', port.get("protocol")))
        if len(spec["ports"]) > 1 and not port.get("name"):
            errors.append(FieldError("Required", f"spec.ports[{i}].name", ""))
    return errors
