"""What every plugin shares: CNI_* + stdin in, a result or a spec error out.

A plugin is a module with ``cmd_add(req) -> dict`` (a result in the internal
1.0.0 form, see cni.types), ``cmd_del(req)``, ``cmd_check(req)`` and,
optionally, ``cmd_gc(req)`` and ``cmd_status(req)``; its ``main()`` is
``return skel.run(sys.modules[__name__])``. Failures leave as the spec's
error JSON on stdout with exit status 1 -- never as a traceback.

This module runs on every pod ADD and DEL: it imports only os, sys and json.
"""
from __future__ import annotations

from cni import fastjson as json
import os
import sys

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8           # libcni's ErrInvalidNetNS; not in the spec's table
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
# The spec's required parameters per operation (CNI_COMMAND aside). CNI_PATH
# is optional except for GC; DEL must work once the netns is gone.
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}
# The first version that knows the command.
MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
_IFNAMSIZ = 16
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


class Request:
    """One invocation: the CNI_* parameters and the parsed configuration (immutable)."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args", "path",
                 "stdin", "conf", "version", "prev_result")

    def __init__(self, command: str, container_id: str = "", netns: str = "", ifname: str = "",
                 args: dict[str, str] | None = None, path: tuple[str, ...] = (),
                 stdin: bytes = b"", conf: dict | None = None, version: str = LATEST_VERSION,
                 prev_result: dict | None = None):
        values = (command, container_id, netns, ifname, dict(args or {}), tuple(path),
                  stdin, conf if conf is not None else {}, version, prev_result)
        for name, value in zip(self.__slots__, values):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"Request is immutable: cannot set {name}")

    def __delattr__(self, name):
        raise AttributeError(f"Request is immutable: cannot delete {name}")

    def replace(self, **changes) -> "Request":
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Request(**fields)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if n != "stdin")
        return f"Request({shown})"


def version_at_least(version: str, minimum: str) -> bool:
    return SUPPORTED_VERSIONS.index(version) >= SUPPORTED_VERSIONS.index(minimum)


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS "K=V;K=V" -> dict; empty segments are ignored."""
    out = {}
    for pair in text.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, f"CNI_ARGS: invalid pair {json.dumps(pair)}",
                           "expected KEY=VALUE pairs separated by ';'")
        out[key] = value
    return out


def _validate_container_id(value: str) -> None:
    if not value[0].isascii() or not value[0].isalnum() or not set(value) <= _NAME_CHARS:
        raise CniError(INVALID_ENV, "CNI_CONTAINERID: invalid characters in container ID",
                       json.dumps(value))


def _validate_ifname(value: str) -> None:
    if len(value) >= _IFNAMSIZ:
        raise CniError(INVALID_ENV, f"CNI_IFNAME: interface name is longer than {_IFNAMSIZ - 1}"
                       " characters", json.dumps(value))
    if value in (".", "..") or any(c in "/:" or c.isspace() for c in value):
        raise CniError(INVALID_ENV, "CNI_IFNAME: interface name is \".\", \"..\" or contains"
                       " '/', ':' or white space", json.dumps(value))


def _validate_network_name(conf: dict) -> None:
    name = conf.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_CONFIG, "name: missing network name")
    if not name[0].isascii() or not name[0].isalnum() or not set(name) <= _NAME_CHARS:
        raise CniError(INVALID_CONFIG, "name: invalid characters found in network name",
                       json.dumps(name))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def decode_conf(stdin: bytes) -> dict:
    try:
        conf = json.loads(stdin.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise CniError(DECODE_FAILURE, "network configuration is not UTF-8", str(e)) from None
    except RecursionError:
        raise CniError(DECODE_FAILURE, "network configuration is nested too deeply") from None
    except ValueError as e:
        raise CniError(DECODE_FAILURE, "network configuration is not valid JSON", str(e)) from None
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "network configuration is not a JSON object",
                       f"got {type(conf).__name__}")
    return conf


def check_version(conf: dict) -> str:
    version = conf.get("cniVersion")
    if version is None:
        raise CniError(INCOMPATIBLE_VERSION, "cniVersion: missing",
                       f"plugin supports {', '.join(SUPPORTED_VERSIONS)}")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion: {json.dumps(version)} is not supported",
                       f"plugin supports {', '.join(SUPPORTED_VERSIONS)}")
    return version


def version_answer(stdin: bytes) -> dict:
    """VERSION: the request's cniVersion echoed (when we speak it) and ours."""
    try:
        asked = json.loads(stdin.decode("utf-8")).get("cniVersion")
    except (ValueError, AttributeError, RecursionError):
        asked = None
    return {"cniVersion": asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION,
            "supportedVersions": list(SUPPORTED_VERSIONS)}


def build_request(environ, stdin: bytes) -> Request:
    """Validate the parameters and the configuration of a non-VERSION command."""
    command = environ.get("CNI_COMMAND", "")
    missing = [v for v in REQUIRED_ENV[command] if not environ.get(v)]
    if missing:
        raise CniError(INVALID_ENV, f"required env variables [{' '.join(missing)}] missing",
                       f"CNI_COMMAND={command}")
    container_id = environ.get("CNI_CONTAINERID", "")
    ifname = environ.get("CNI_IFNAME", "")
    if container_id:
        _validate_container_id(container_id)
    if ifname:
        _validate_ifname(ifname)
    conf = decode_conf(stdin)
    version = check_version(conf)
    _validate_network_name(conf)
    minimum = MIN_VERSION.get(command)
    if minimum and not version_at_least(version, minimum):
        raise CniError(INCOMPATIBLE_VERSION, f"config version does not allow {command}",
                       f"cniVersion {version}; {command} needs {minimum} or later")
    prev = conf.get("prevResult")
    if prev is not None:
        from cni import types
        try:
            prev = types.to_internal(prev, version)
        except ValueError as e:
            raise CniError(DECODE_FAILURE, f"prevResult: {e}") from None
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    return Request(command=command, container_id=container_id,
                   netns=environ.get("CNI_NETNS", ""), ifname=ifname,
                   args=parse_cni_args(environ.get("CNI_ARGS", "")), path=path,
                   stdin=stdin, conf=conf, version=version, prev_result=prev)


def dispatch(plugin, req: Request) -> dict | None:
    """Call the plugin; the returned result is already in the request's version."""
    if req.command == "ADD":
        from cni import types
        return types.convert(plugin.cmd_add(req), req.version)
    handler = {"DEL": "cmd_del", "CHECK": "cmd_check", "GC": "cmd_gc",
               "STATUS": "cmd_status"}[req.command]
    fn = getattr(plugin, handler, None)
    if fn is not None:
        fn(req)
    return None


def execute(plugin, environ, stdin: bytes) -> dict | None:
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(INVALID_ENV, "required env variables [CNI_COMMAND] missing")
    if command not in COMMANDS:
        raise CniError(INVALID_ENV, f"CNI_COMMAND: unknown command {json.dumps(command)}",
                       f"expected one of {', '.join(COMMANDS)}")
    if command == "VERSION":
        return version_answer(stdin)
    return dispatch(plugin, build_request(environ, stdin))


VALID_ATTACHMENTS = "cni.dev/valid-attachments"


def valid_attachments(conf: dict) -> set[tuple[str, str]]:
    """GC's (containerID, ifname) pairs that are still in use.

    Missing or malformed is code 7, never "nothing is valid": GC releases
    everything outside this set, so a runtime bug must not empty a node.
    """
    value = conf.get(VALID_ATTACHMENTS)
    if not isinstance(value, list):
        raise CniError(INVALID_CONFIG, f"{VALID_ATTACHMENTS}: must be a list of "
                       "{containerID, ifname}", json.dumps(value)[:200])
    out = set()
    for i, att in enumerate(value):
        if not (isinstance(att, dict) and isinstance(att.get("containerID"), str)
                and isinstance(att.get("ifname"), str)):
            raise CniError(INVALID_CONFIG, f"{VALID_ATTACHMENTS}[{i}]: needs string "
                           "containerID and ifname", json.dumps(att)[:200])
        out.add((att["containerID"].strip(), att["ifname"]))
    return out


def error_json(err: CniError, version: str) -> dict:
    return {"cniVersion": version, "code": err.code, "msg": err.msg, "details": err.details}


def _version_for_errors(stdin: bytes) -> str:
    try:
        version = json.loads(stdin.decode("utf-8")).get("cniVersion")
    except Exception:  # any garbage: errors then speak the latest version
        return LATEST_VERSION
    return version if version in SUPPORTED_VERSIONS else LATEST_VERSION


def _emit(obj: dict) -> None:
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        pass  # the runtime went away; nothing left to tell it


def run(plugin, environ=None, stdin: bytes | None = None) -> int:
    environ = os.environ if environ is None else environ
    try:
        if stdin is None:
            try:
                stdin = sys.stdin.buffer.read()
            except (OSError, ValueError, AttributeError) as e:
                stdin = b""
                raise CniError(IO_FAILURE, "cannot read the network configuration from stdin",
                               str(e)) from None
        out = execute(plugin, environ, stdin)
    except CniError as e:
        _emit(error_json(e, _version_for_errors(stdin or b"")))
        return 1
    except Exception as e:  # a plugin bug must still answer in the spec's format
        _emit(error_json(CniError(INTERNAL, f"{type(e).__name__}: {e}"),
                         _version_for_errors(stdin or b"")))
        return 1
    if out is not None:
        _emit(out)
    return 0
