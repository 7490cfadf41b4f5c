"""install --lib-dir (host mode), as a DaemonSet's init container runs it: into a node root
mounted elsewhere. The launchers hold the node's paths (/opt/..., /usr/bin/python3), so the
plugins are run the way the node would run them: in a private mount namespace where the
node root's /opt is bind-mounted over /opt (the node's /usr is this machine's own, whose
python3 the launchers name). A runtime-style driver then gives a pod an address, a hostPort
and a clean DEL through them, inside namespaces the test made."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

from conf import defaults
from helpers.cni_cli import kube_router_cni
from helpers.traffic import connect_through, tcp_exchange

NODE_PYTHON = "/usr/bin/python3"
LIB = "/opt/kube-router/lib"


def node_python_usable() -> bool:
    if not os.access(NODE_PYTHON, os.X_OK):
        return False
    out = subprocess.run([NODE_PYTHON, "-I", "-S", "-c",
                          "import sys; sys.exit(sys.version_info < (3, 11))"], timeout=30)
    return out.returncode == 0


pytestmark = [
    pytest.mark.skipif(not node_python_usable(),
                       reason=f"needs {NODE_PYTHON} >= 3.11: the interpreter the launchers name"),
    pytest.mark.skipif(shutil.which("unshare") is None,
                       reason="needs unshare (util-linux) for a private mount namespace"),
]


def make_node_root(root):
    """A node's / with Debian's python3 -> python3.11 layout, for install's check."""
    real = os.path.realpath(NODE_PYTHON)
    usr_bin = root / "usr/bin"
    usr_bin.mkdir(parents=True)
    shutil.copy2(real, usr_bin / os.path.basename(real))
    (usr_bin / "python3").symlink_to(os.path.basename(real))


def node_view_wrappers(directory, node_opt):
    """What the runtime execs: each plugin as the node sees it, /opt being the node's."""
    directory.mkdir()
    for name in defaults.LAUNCHERS:
        wrapper = directory / name
        wrapper.write_text(
            "#!/bin/sh\n"
            "exec unshare --mount --propagation private "
            f"sh -c 'mount --bind \"$0\" /opt && exec \"/opt/cni/bin/$1\"' {node_opt} {name}\n")
        wrapper.chmod(0o755)
    return directory


@pytest.fixture
def node(tmp_path):
    root = tmp_path / "node"
    make_node_root(root)
    data_dir = tmp_path / "ipam"
    out = kube_router_cni("install", "--root", root, "--lib-dir", LIB, "--python", NODE_PYTHON,
                          "--pod-cidr", "10.244.8.0/24", "--mtu", "1500",
                          "--data-dir", data_dir)
    [library] = os.listdir(root / LIB.lstrip("/"))
    return root, library, data_dir, out


def test_launchers_name_node_paths_that_this_machine_lacks(node):
    root, library, _, _ = node
    exe = root / "opt/cni/bin/kube-router-bridge"
    text = exe.read_text()
    assert text.startswith(f"#!{NODE_PYTHON} -IS\n")
    assert f"'{LIB}/{library}'" in text and str(root) not in text
    if os.path.exists(os.path.join(LIB, library)):
        pytest.skip(f"{LIB}/{library} exists on this machine: the launcher would import it")
    # Outside the node's view its import path does not exist: nothing else feeds it cni.
    out = subprocess.run([str(exe)], env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
                         input="{}", capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "No module named 'cni'" in out.stderr


def test_a_pod_comes_up_through_host_mode_launchers(node, tmp_path, host_ns, netns_factory):
    from krsim.cniruntime import Attachment, CniRuntime

    root, library, data_dir, _ = node
    wrappers = node_view_wrappers(tmp_path / "runtime-bin", root / "opt")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "VERSION",
           "CNI_PATH": str(wrappers)}
    for name in defaults.LAUNCHERS:
        out = subprocess.run(host_ns.argv([str(wrappers / name)]), env=env,
                             input='{"cniVersion": "1.0.0"}', capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert "1.0.0" in json.loads(out.stdout)["supportedVersions"]

    conflist = root / "etc/cni/net.d/10-kuberouter.conflist"
    runtime = CniRuntime.from_file(str(conflist), [str(wrappers)], node_netns=host_ns.name)
    pod = netns_factory("pod")
    att = Attachment(uuid.uuid4().hex, pod.path, "eth0",
                     capability_args={"portMappings": [
                         {"hostPort": 8082, "containerPort": 80, "protocol": "tcp"}]})
    result = runtime.add(att)
    try:
        assert [ip["address"] for ip in result["ips"]] == ["10.244.8.2/24"]
        assert (data_dir / "kubernetes" / "10.244.8.2").exists()
        tcp_exchange(host_ns, pod, "10.244.8.2", port=0)      # node -> pod
        tcp_exchange(pod, host_ns, "10.244.8.1", port=0)      # pod -> node (its gateway)
        # node -> 127.0.0.1:hostPort -> pod:80
        connect_through(host_ns, pod, ("10.244.8.2", 80), ("127.0.0.1", 8082))
    finally:
        runtime.delete(att)
    assert not (data_dir / "kubernetes" / "10.244.8.2").exists()
    veths = json.loads(host_ns.exec(["ip", "-j", "link", "show", "type", "veth"]).stdout or "[]")
    assert veths == []
    assert "KRT-DN-" not in host_ns.exec(["iptables-save", "-t", "nat"]).stdout
    # What ran was the copy, under the node's interpreter: it cached its bytecode there.
    cache = root / LIB.lstrip("/") / library / "cni/bridge/__pycache__"
    tag = subprocess.run([NODE_PYTHON, "-I", "-S", "-c", "import sys; print(sys.implementation"
                          ".cache_tag)"], capture_output=True, text=True, timeout=30).stdout
    assert f"plugin.{tag.strip()}.pyc" in os.listdir(cache)
    # A re-install leaves the copy, cache and all, alone.
    again = kube_router_cni("install", "--root", root, "--lib-dir", LIB, "--python",
                            NODE_PYTHON, "--pod-cidr", "10.244.8.0/24", "--mtu", "1500",
                            "--data-dir", data_dir)
    assert "installed" not in again.stdout and "removed" not in again.stdout
