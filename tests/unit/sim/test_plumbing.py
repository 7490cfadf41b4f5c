"""API paths, the VM re-run command and the daemon hook's off state."""
import os
import sys

import pytest

from krsim import daemon, vm
from krsim.apiclient import object_path


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
    assert argv[1:] == ["--", sys.executable, "-m", "krsim.cli", "run", "/s.yaml",
                        "--json", "/r.json"]


def test_vm_writes_back_only_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not vm.outside_cwd(str(tmp_path / "r.json"))
    assert not vm.outside_cwd("r.json")
    assert vm.outside_cwd("/somewhere-else/r.json")


def test_daemon_command_line_is_one_the_daemon_accepts():
    from proxyd import cli, config as cfg
    argv = daemon.daemon_argv("/bin", "http://172.30.0.1:1", "node-a")
    assert argv[:3] == ["/bin/kube-router", "--master=http://172.30.0.1:1",
                        "--hostname-override=node-a"]
    parsed, action = cli.parse_args(argv[1:])
    assert action is None and cfg.check_features(parsed) == []
    assert set(parsed.enabled_controllers()) == set(daemon.CONTROLLERS)


def test_daemon_lagging_until_every_kind_reaches_the_newest_write():
    from krsim.daemon import lagging
    newest = {"pods": 40, "namespaces": 12, "networkpolicies": 0, "services": 99, "nodes": 3,
              "configmaps": 500}
    status = {"controllers": {"firewall": {"resource_versions": {
        "pods": "39", "namespaces": "50", "networkpolicies": "50"}},
        "router": {"resource_versions": {"nodes": "7", "services": "99", "endpointslices": "1"}}}}
    assert lagging(status, newest) == ["firewall has pods at 39 of 40"]
    status["controllers"]["firewall"]["resource_versions"]["pods"] = "40"
    assert lagging(status, newest) == []          # configmaps: no controller reads them
    assert lagging({"controllers": {}}, newest) != []      # no sync yet
    assert lagging(None, newest) == ["not answering /statusz yet"]
