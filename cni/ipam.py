"""Delegation to the IPAM plugin named by ``ipam.type`` (spec section 4).

The delegated plugin gets the caller's parameters and network configuration
with CNI_COMMAND set to the operation; its error JSON comes back as a
CniError with the same code, message and details. ``kube-router-host-local``
is called in-process: one process start less on every pod ADD and DEL.
"""
from __future__ import annotations

from cni import fastjson as json
import os

from cni import skel

IN_PROCESS = "kube-router-host-local"


def _plugin_type(ipam_conf: dict) -> str:
    kind = ipam_conf.get("type") if isinstance(ipam_conf, dict) else None
    if not isinstance(kind, str) or not kind:
        raise skel.CniError(skel.INVALID_CONFIG, "ipam.type: missing")
    if "/" in kind or kind in (".", ".."):
        raise skel.CniError(skel.INVALID_CONFIG, f"ipam.type: {json.dumps(kind)} is not a"
                            " plugin name")
    return kind


def _delegated_request(req: skel.Request, command: str, ipam_conf: dict) -> skel.Request:
    """The request the IPAM plugin sees: the same one, unless ipam was rewritten."""
    if req.conf.get("ipam") == ipam_conf:
        return req.replace(command=command)
    conf = dict(req.conf, ipam=ipam_conf)
    return req.replace(command=command, conf=conf, stdin=json.dumps(conf).encode())


def find_plugin(kind: str, path: tuple[str, ...]) -> str:
    for directory in path:
        candidate = os.path.join(directory, kind)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise skel.CniError(skel.INVALID_CONFIG, f"ipam.type: plugin {json.dumps(kind)} not found",
                        f"CNI_PATH={':'.join(path)}")


def _environment(req: skel.Request) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "CNI_COMMAND": req.command,
        "CNI_CONTAINERID": req.container_id,
        "CNI_NETNS": req.netns,
        "CNI_IFNAME": req.ifname,
        "CNI_ARGS": ";".join(f"{k}={v}" for k, v in req.args.items()),
        "CNI_PATH": ":".join(req.path),
    })
    return env


def _exec(req: skel.Request, kind: str) -> dict | None:
    import subprocess
    binary = find_plugin(kind, req.path)
    try:
        proc = subprocess.run([binary], input=req.stdin, capture_output=True,
                              env=_environment(req), check=False)
    except OSError as e:
        raise skel.CniError(skel.IO_FAILURE, f"ipam: cannot run {binary}", str(e)) from None
    out = proc.stdout.strip()
    try:
        answer = json.loads(out) if out else None
    except ValueError:
        answer = None
    if proc.returncode != 0:
        if isinstance(answer, dict) and isinstance(answer.get("code"), int):
            raise skel.CniError(answer["code"], str(answer.get("msg", "")),
                                str(answer.get("details", "")))
        raise skel.CniError(skel.INTERNAL, f"ipam plugin {kind} failed with status"
                            f" {proc.returncode}",
                            (proc.stderr or proc.stdout).decode("utf-8", "replace").strip())
    if req.command == "ADD" and not isinstance(answer, dict):
        raise skel.CniError(skel.DECODE_FAILURE, f"ipam plugin {kind} returned no result",
                            out.decode("utf-8", "replace")[:200])
    return answer


def _call(req: skel.Request, command: str, ipam_conf: dict) -> dict | None:
    kind = _plugin_type(ipam_conf)
    delegated = _delegated_request(req, command, ipam_conf)
    if kind == IN_PROCESS:
        from cni.host_local import plugin
        handler = getattr(plugin, "cmd_" + command.lower())
        return handler(delegated)
    return _exec(delegated, kind)


def exec_add(req: skel.Request, ipam_conf: dict) -> dict:
    """Allocate: the IPAM result in the internal (1.0.0) form."""
    from cni import types
    result = _call(req, "ADD", ipam_conf)
    version = result.get("cniVersion", req.version)
    if version not in skel.SUPPORTED_VERSIONS:
        raise skel.CniError(skel.INCOMPATIBLE_VERSION, f"ipam plugin {ipam_conf['type']}"
                            f" answered in unsupported cniVersion {json.dumps(version)}")
    try:
        return types.to_internal(result, version)
    except ValueError as e:
        raise skel.CniError(skel.DECODE_FAILURE, f"ipam result: {e}") from None


def exec_del(req: skel.Request, ipam_conf: dict) -> None:
    _call(req, "DEL", ipam_conf)


def exec_check(req: skel.Request, ipam_conf: dict) -> None:
    _call(req, "CHECK", ipam_conf)


def exec_gc(req: skel.Request, ipam_conf: dict) -> None:
    _call(req, "GC", ipam_conf)


def exec_status(req: skel.Request, ipam_conf: dict) -> None:
    _call(req, "STATUS", ipam_conf)
