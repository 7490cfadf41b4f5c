"""packaging/: every command line the manifests ship is accepted by our own parsers, the
RBAC rules are exactly what the enabled controllers read, and the DaemonSet, image and
systemd unit hang together. Each check fails when a manifest drifts from the code."""
from __future__ import annotations

import importlib.metadata
import os
import pathlib
import posixpath
import re
import shlex
import shutil
import subprocess
import sys

import click
import pytest
import yaml

from conf.cli import cli as cni_cli
from proxyd import cli as kr_cli
from proxyd import config as cfg
from proxyd.controllers import REGISTRY, _load
from proxyd.k8s.client import KINDS

PACKAGING = pathlib.Path(__file__).resolve().parents[3] / "packaging"
MANIFEST = PACKAGING / "kubernetes/kube-router.yaml"
UNIT = PACKAGING / "systemd/kube-router.service"
ENV_FILE = PACKAGING / "systemd/kube-router.env"
CONTAINERFILE = PACKAGING / "image/Containerfile"

# The controller class behind each run-* flag, from the registry: its kinds reach the
# RBAC check below.
CONTROLLER_CLASSES = {row.key: _load(row.factory) for row in REGISTRY if row.built}
MAKEFILE = PACKAGING.parent / "Makefile"
READ = frozenset({"get", "list", "watch"})
# kube-router-cni reads this node's Node object for its pod CIDR (conf/node.py read_node).
CNI_INSTALL_READS = {"nodes": frozenset({"get"})}


@pytest.fixture(scope="module")
def docs():
    with open(MANIFEST) as f:
        return {d["kind"]: d for d in yaml.safe_load_all(f) if d}


@pytest.fixture(scope="module")
def pod(docs):
    return docs["DaemonSet"]["spec"]["template"]["spec"]


def containers(pod):
    return [*pod.get("initContainers", []), *pod["containers"]]


def argv(container) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def by_program(pod, program):
    found = [c for c in containers(pod) if posixpath.basename(argv(c)[0]) == program]
    assert found, f"no container runs {program}"
    return found


def kube_router_config(args) -> cfg.Config:
    config, action = kr_cli.parse_args(args)
    assert action is None, f"{args} asks for --{action} instead of running"
    assert cfg.check_features(config) == [], args
    return config


def cni_params(args) -> tuple[str, dict]:
    """kube-router-cni's own click parsing (types, choices, unknown options), not run."""
    group_ctx = click.Context(cni_cli, info_name="kube-router-cni")
    name, *rest = args
    command = cni_cli.get_command(group_ctx, name)
    assert command is not None, f"kube-router-cni has no command {name!r}"
    return name, command.make_context(name, list(rest), parent=group_ctx).params


@pytest.fixture(autouse=True)
def no_config_env(monkeypatch):
    monkeypatch.delenv("KUBE_ROUTER_CNI_CONF_FILE", raising=False)


# ---- command lines -----------------------------------------------------------------

def test_every_container_runs_one_of_our_programs_with_arguments_it_accepts(pod):
    scripts = {ep.name for ep in importlib.metadata.distribution("kube-router").entry_points
               if ep.group == "console_scripts"}
    seen = set()
    for container in containers(pod):
        program, *args = argv(container)
        assert program in scripts, f"{container['name']}: {program} is not one of {scripts}"
        if program == "kube-router":
            kube_router_config(args)
        elif program == "kube-router-cni":
            cni_params(args)
        else:
            pytest.fail(f"{container['name']}: no parser check for {program}")
        seen.add(program)
    assert seen == {"kube-router", "kube-router-cni"}


def test_the_daemon_runs_firewall_router_and_service_proxy(pod):
    [daemon] = by_program(pod, "kube-router")
    config = kube_router_config(argv(daemon)[1:])
    assert set(config.enabled_controllers()) == {cfg.FIREWALL, cfg.ROUTER, cfg.PROXY}


def test_the_init_container_installs_in_host_mode(pod):
    [init] = by_program(pod, "kube-router-cni")
    assert init in pod["initContainers"]
    name, params = cni_params(argv(init)[1:])
    assert name == "install"
    # The container's interpreter and import path do not exist on the node.
    assert params["lib_dir"] and params["python"] and params["root"]
    assert posixpath.isabs(params["lib_dir"]) and posixpath.isabs(params["python"])


def mount_covering(container, path):
    """The deepest volumeMount at or above ``path``."""
    best = None
    for mount in container.get("volumeMounts", []):
        top = mount["mountPath"].rstrip("/")
        if (path == top or path.startswith(top + "/")) and (
                best is None or len(top) > len(best["mountPath"])):
            best = mount
    return best


def test_every_node_path_the_install_touches_is_that_node_path(pod):
    """--root + a node path must land on a hostPath volume of that same node path, and
    what install writes must be mounted read-write."""
    [init] = by_program(pod, "kube-router-cni")
    _, p = cni_params(argv(init)[1:])
    volumes = {v["name"]: v for v in pod["volumes"]}
    touched = {p["cni_bin_dir"]: "write", p["lib_dir"]: "write",
               posixpath.dirname(p["output"]): "write",
               posixpath.dirname(p["python"]): "read", p["reference_dir"]: "read"}
    for node_path, use in touched.items():
        inside = posixpath.join(p["root"], node_path.lstrip("/"))
        mount = mount_covering(init, inside)
        assert mount is not None, f"{node_path} ({use}) is not mounted at {inside}"
        host = volumes[mount["name"]].get("hostPath")
        assert host, f"{node_path}: volume {mount['name']} is not a hostPath"
        rel = posixpath.relpath(inside, mount["mountPath"])
        assert posixpath.normpath(posixpath.join(host["path"], rel)) == node_path
        if use == "write":
            assert not mount.get("readOnly"), f"{node_path} is written but mounted read-only"


def test_kubeconfig_flags_point_into_a_mounted_volume(pod):
    volumes = {v["name"] for v in pod["volumes"]}
    for container in containers(pod):
        kubeconfig = [a.split("=", 1)[1] for a in argv(container) if
                      a.startswith("--kubeconfig=")]
        for path in kubeconfig:
            mount = mount_covering(container, path)
            assert mount and mount["name"] in volumes, f"{container['name']}: {path}"


# ---- RBAC ----------------------------------------------------------------------------

def api_group(kind_path: str) -> str:
    match = re.fullmatch(r"/api/v1/[a-z]+|/apis/([^/]+)/[^/]+/[a-z]+", kind_path)
    assert match, kind_path
    return match[1] or ""


def granted(role) -> dict[tuple[str, str], frozenset[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return {k: frozenset(v) for k, v in out.items()}


def test_cluster_role_grants_exactly_what_the_enabled_controllers_read(docs, pod):
    [daemon] = by_program(pod, "kube-router")
    config = kube_router_config(argv(daemon)[1:])
    needed: dict[str, frozenset[str]] = dict(CNI_INSTALL_READS)
    for controller in config.enabled_controllers():
        assert controller in CONTROLLER_CLASSES, (
            f"the manifest enables {controller}, which this build does not have")
        for kind in CONTROLLER_CLASSES[controller].kinds:
            needed[kind] = needed.get(kind, frozenset()) | READ
    expected = {(api_group(KINDS[kind].path), kind): verbs for kind, verbs in needed.items()}
    assert granted(docs["ClusterRole"]) == expected


def test_the_binding_ties_the_role_to_the_pods_account(docs, pod):
    binding, account = docs["ClusterRoleBinding"], docs["ServiceAccount"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole",
                                  "name": docs["ClusterRole"]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount",
                                    "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert docs["DaemonSet"]["metadata"]["namespace"] == account["metadata"]["namespace"]


# ---- the DaemonSet ------------------------------------------------------------------

def test_probes_ask_the_daemons_health_port(pod):
    [daemon] = by_program(pod, "kube-router")
    config = kube_router_config(argv(daemon)[1:])
    assert config.health_port == cfg.FLAGS["health-port"].default != 0
    for probe in ("livenessProbe", "readinessProbe"):
        assert daemon[probe]["httpGet"] == {"path": "/healthz", "port": config.health_port}


def test_every_mount_has_a_volume_and_every_volume_a_mount(pod):
    volumes = [v["name"] for v in pod["volumes"]]
    assert len(volumes) == len(set(volumes))
    mounted = set()
    for container in containers(pod):
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container['name']}: {mount['name']}"
            mounted.add(mount["name"])
    assert mounted == set(volumes)


def test_the_daemon_sees_the_nodes_modules_and_xtables_lock(pod):
    [daemon] = by_program(pod, "kube-router")
    volumes = {v["name"]: v for v in pod["volumes"]}
    host_paths = {m["mountPath"]: volumes[m["name"]].get("hostPath", {}).get("path")
                  for m in daemon["volumeMounts"]}
    assert host_paths["/lib/modules"] == "/lib/modules"
    assert host_paths["/run/xtables.lock"] == "/run/xtables.lock"


def test_the_pod_runs_on_every_node_as_node_networking(docs, pod):
    spec = docs["DaemonSet"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"][
        "labels"].items()
    assert spec["updateStrategy"] == {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxUnavailable": 1}}
    assert pod["hostNetwork"] is True and not pod.get("hostPID")
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["terminationGracePeriodSeconds"] > 0
    tolerated = {t.get("effect") for t in pod["tolerations"]
                 if t["operator"] == "Exists" and "key" not in t}
    assert {"NoSchedule", "NoExecute"} <= tolerated
    for container in containers(pod):
        assert container["securityContext"]["privileged"] is True
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    [daemon] = by_program(pod, "kube-router")
    assert daemon["resources"]["requests"].keys() == {"cpu", "memory"}


# ---- the image -----------------------------------------------------------------------

def test_the_image_has_what_the_daemon_execs_and_runs_kube_router():
    text = CONTAINERFILE.read_text()
    assert re.search(r"^FROM debian:12-slim$", text, re.M)
    install = re.search(r"apt-get install ([^&]*)", text)
    assert install, "no apt-get install in the Containerfile"
    packages = {w for w in install[1].replace("\\", " ").split() if not w.startswith("-")}
    assert {"python3", "python3-venv", "iptables", "ipset", "iproute2", "conntrack", "gobgpd",
            "kmod"} <= packages
    venv = re.search(r"python3 -m venv (\S+)", text)[1]
    assert f"{venv}/bin/pip install --no-cache-dir /src" in text
    assert re.search(rf"^ENV PATH={re.escape(venv)}/bin:\$PATH$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["kube-router"\]$', text, re.M)
    copied = set(re.findall(r"^COPY (\S+) /src/\1$", text, re.M))
    # the packages setup.cfg finds, but the harness (krsim): no product code needs it
    assert copied == {"lowlevel", "cni", "conf", "proxyd"}


# ---- systemd ---------------------------------------------------------------------------

def read_unit(path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(section, key) -> list[str]:
    return [v for k, v in section if k == key]


def read_environment_file(path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            [env[key.strip()]] = shlex.split(value) or [""]
    return env


def expand_exec(command: str, env: dict[str, str]) -> list[str]:
    """systemd's rule: an unquoted ``$VAR`` becomes the variable's words."""
    out = []
    for word in shlex.split(command):
        match = re.fullmatch(r"\$(\w+)|\$\{(\w+)\}", word)
        out.extend(env[match[1] or match[2]].split() if match else [word])
    return out


def test_the_unit_runs_kube_router_with_flags_it_accepts():
    service = read_unit(UNIT)["Service"]
    [env_file] = values(service, "EnvironmentFile")
    assert env_file == "/etc/default/kube-router"
    [exec_start] = values(service, "ExecStart")
    cmd = expand_exec(exec_start, read_environment_file(ENV_FILE))
    assert posixpath.basename(cmd[0]) == "kube-router"
    config = kube_router_config(cmd[1:])
    assert set(config.enabled_controllers()) == {cfg.FIREWALL, cfg.ROUTER, cfg.PROXY}


def test_the_unit_restarts_and_stops_the_way_the_daemon_expects():
    unit = read_unit(UNIT)
    service = dict(unit["Service"])
    assert service["Type"] == "simple" and service["Restart"] == "always"
    # SIGTERM is the signal on which the daemon leaves the kernel state in place.
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert int(service["LimitNOFILE"]) >= 65536
    # $RUNTIME_DIRECTORY is where gobgpd's root-only API socket goes (proxyd/routing/gobgpd.py).
    assert service["RuntimeDirectory"] == "kube-router" and service["RuntimeDirectoryMode"] == "0700"
    assert "network-online.target" in " ".join(values(unit["Unit"], "After"))
    assert "network-online.target" in " ".join(values(unit["Unit"], "Wants"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="needs systemd-analyze (Debian package systemd)")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    # verify insists that ExecStart's binary exists: point it at this installation's.
    exe = pathlib.Path(sys.executable).with_name("kube-router")
    if not os.access(exe, os.X_OK):
        pytest.skip(f"no kube-router console script next to {sys.executable}")
    text = UNIT.read_text()
    assert text.count("/opt/kube-router/venv/bin/kube-router ") == 1
    unit = tmp_path / "kube-router.service"
    unit.write_text(text.replace("/opt/kube-router/venv/bin/kube-router ", f"{exe} ")
                    .replace("/etc/default/kube-router", str(ENV_FILE)))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    complaints = [line for line in (out.stdout + out.stderr).splitlines()
                  if "kube-router" in line]
    assert complaints == []


# ---- what the controllers run ----------------------------------------------------------

def debian_package_of(executable: str) -> str:
    """The Debian package that installs ``executable`` on this machine (dpkg -S)."""
    path = shutil.which(executable)
    assert path, f"{executable} is not installed here: `make setup` installs the Makefile's list"
    real = os.path.realpath(path)
    # usrmerge: dpkg may know a file under /sbin or /bin rather than /usr/sbin, /usr/bin.
    for candidate in dict.fromkeys((path, real, real.removeprefix("/usr"),
                                    path.removeprefix("/usr"))):
        found = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if found.returncode == 0:
            return found.stdout.split(":", 1)[0]
    raise AssertionError(f"no Debian package owns {path} ({real})")


def makefile_packages() -> set[str]:
    text = MAKEFILE.read_text().replace("\\\n", " ")
    line = re.search(r"^APT_PACKAGES := (.*)$", text, re.M)[1]
    return {w for w in re.sub(r"\$\(.*?\)\)?", " ", line).split()}


def image_packages() -> set[str]:
    install = re.search(r"apt-get install ([^&]*)", CONTAINERFILE.read_text())[1]
    return {w for w in install.replace("\\", " ").split() if not w.startswith("-")}


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg (a Debian machine)")
def test_the_makefile_and_the_image_install_every_executable_a_controller_runs():
    wanted = {(row.key, exe) for row in REGISTRY if row.built for exe in row.execs}
    assert {exe for _, exe in wanted} >= {"gobgpd", "ipvsadm", "ipset", "iptables-restore"}
    missing = []
    for key, exe in sorted(wanted):
        package = debian_package_of(exe)
        missing += [f"{key} runs {exe} (package {package}): not in the {where}"
                    for where, packages in (("Makefile", makefile_packages()),
                                            ("Containerfile", image_packages()))
                    if package not in packages]
    assert missing == []
