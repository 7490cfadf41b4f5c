"""API paths, the VM re-run command and the daemon hook's off state."""
import os
import sys

import pytest

from proxyd.sim import daemon, vm
from proxyd.sim.apiclient import object_path


def test_object_paths():
    assert object_path("Pod", "x", "a", "status") == "/api/v1/namespaces/x/pods/a/status"
    assert object_path("Pod") == "/api/v1/namespaces/default/pods"
    assert object_path("Node", "", "node-a") == "/api/v1/nodes/node-a"
    assert object_path("NetworkPolicy", "y") == \
        "/apis/networking.k8s.io/v1/namespaces/y/networkpolicies"
    with pytest.raises(ValueError, match="Deployment"):
        object_path("Deployment")


def test_vm_rerun_is_the_same_command_inside_the_runner():
    argv = vm.vm_argv(["run", "/s.yaml", "--json", "/r.json"])
    assert argv[0].endswith("tests/vm/run") and os.access(argv[0], os.X_OK)
    assert argv[1:] == ["--", sys.executable, "-m", "proxyd.sim.cli", "run", "/s.yaml",
                        "--json", "/r.json"]


def test_vm_writes_back_only_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not vm.outside_cwd(str(tmp_path / "r.json"))
    assert not vm.outside_cwd("r.json")
    assert vm.outside_cwd("/somewhere-else/r.json")


def test_daemon_hook_is_off_until_a_controller_exists():
    # While the daemon refuses to start, the hook starts nothing and waits for nothing.
    assert daemon.DAEMON_ENABLED is False
    assert daemon.start_daemon(object(), "http://172.30.0.1:1") is None
    assert daemon.daemons_synced([object()], world=None) is True
    argv = daemon.daemon_argv("/bin", "http://172.30.0.1:1", "node-a")
    assert argv[:3] == ["/bin/kube-router", "--master=http://172.30.0.1:1",
                        "--hostname-override=node-a"]
