"""Run a CNI configuration list exactly as a container runtime does (libcni's job).

ADD walks the plugins in order, handing each the previous plugin's result as
``prevResult``; DEL walks them in reverse with the cached ADD result; CHECK walks
them in order with it. Capabilities a plugin declares receive the matching
``runtimeConfig`` entries (``portMappings``, ``ips``, ``mac`` …). Plugins are
exec'd inside the node's network namespace with the spec's ``CNI_*`` variables.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field


class PluginError(Exception):
    """A plugin answered with a spec error (or broke the protocol)."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = ""):
        self.plugin, self.command, self.code, self.msg, self.details = (
            plugin, command, code, msg, details)
        text = f"{plugin} {command} failed: code {code}: {msg}"
        super().__init__(text + (f" ({details})" if details else ""))


@dataclass
class Attachment:
    """One (container, ifname) on the network and what ADD returned for it."""
    container_id: str
    netns: str
    ifname: str = "eth0"
    args: dict = field(default_factory=dict)          # CNI_ARGS (K8S_POD_NAME …)
    capability_args: dict = field(default_factory=dict)  # portMappings, ips, mac …
    result: dict | None = None


class CniRuntime:
    def __init__(self, conflist: dict, bin_dirs: list[str], node_netns: str | None = None,
                 timeout: float = 30.0):
        if not conflist.get("plugins"):
            raise ValueError("conflist has no plugins")
        self.conflist = conflist
        self.bin_dirs = list(bin_dirs)
        self.node_netns = node_netns
        self.timeout = timeout

    @classmethod
    def from_file(cls, path: str, bin_dirs: list[str], **kw) -> "CniRuntime":
        with open(path) as f:
            return cls(json.load(f), bin_dirs, **kw)

    def add(self, att: Attachment) -> dict:
        prev = None
        for plugin in self.conflist["plugins"]:
            prev = self._exec(plugin, "ADD", att, prev)
        att.result = prev
        return prev

    def check(self, att: Attachment) -> None:
        for plugin in self.conflist["plugins"]:
            self._exec(plugin, "CHECK", att, att.result)

    def delete(self, att: Attachment) -> None:
        """DEL every plugin in reverse order; the first failure is raised after all ran."""
        first_error = None
        for plugin in reversed(self.conflist["plugins"]):
            try:
                self._exec(plugin, "DEL", att, att.result)
            except PluginError as exc:
                first_error = first_error or exc
        if first_error:
            raise first_error

    def _netconf(self, plugin: dict, att: Attachment, prev: dict | None) -> dict:
        conf = dict(plugin)
        conf["name"] = self.conflist["name"]
        conf["cniVersion"] = self.conflist["cniVersion"]
        if prev is not None:
            conf["prevResult"] = prev
        runtime = {key: att.capability_args[key]
                   for key, on in (plugin.get("capabilities") or {}).items()
                   if on and key in att.capability_args}
        if runtime:
            conf["runtimeConfig"] = runtime
        return conf

    def _exec(self, plugin: dict, command: str, att: Attachment, prev: dict | None):
        binary = self._find(plugin["type"])
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": att.container_id,
            "CNI_NETNS": att.netns,
            "CNI_IFNAME": att.ifname,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in att.args.items()),
            "CNI_PATH": ":".join(self.bin_dirs),
        }
        argv = [binary]
        if self.node_netns:
            argv = ["ip", "netns", "exec", self.node_netns, binary]
        stdin = json.dumps(self._netconf(plugin, att, prev)).encode()
        proc = subprocess.run(argv, input=stdin, env=env, capture_output=True,
                              timeout=self.timeout)
        out = proc.stdout.decode(errors="replace").strip()
        if proc.returncode != 0:
            try:
                err = json.loads(out)
                raise PluginError(plugin["type"], command, int(err.get("code", 0)),
                                  str(err.get("msg", "")), str(err.get("details", "")))
            except (ValueError, AttributeError):
                raise PluginError(plugin["type"], command, -1,
                                  f"exit {proc.returncode}, no error JSON",
                                  (out + " " + proc.stderr.decode(errors="replace")).strip())
        if command != "ADD":
            return prev
        try:
            return json.loads(out)
        except ValueError:
            raise PluginError(plugin["type"], command, -1, "ADD printed no result JSON", out)

    def _find(self, plugin_type: str) -> str:
        for d in self.bin_dirs:
            path = os.path.join(d, plugin_type)
            if os.access(path, os.X_OK):
                return path
        raise PluginError(plugin_type, "find", -1,
                          f"plugin {plugin_type!r} not found in {':'.join(self.bin_dirs)}")
