"""What the kubelet reads from a Pod and writes back."""
from krsim import podspec

POD = {"metadata": {"name": "a", "namespace": "x", "uid": "u1"},
       "spec": {"nodeName": "node-a", "containers": [
           {"name": "web", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"},
                                     {"containerPort": 53, "protocol": "UDP"}]},
           {"name": "side", "ports": [{"containerPort": 80, "protocol": "TCP"},
                                      {"containerPort": 9, "protocol": "SCTP", "hostPort": 9,
                                       "hostIP": "127.0.0.1"}]}]}}


def test_ports_and_mappings():
    assert podspec.container_ports(POD) == [(80, "TCP"), (53, "UDP"), (9, "SCTP")]
    assert podspec.port_mappings(POD) == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 9, "containerPort": 9, "protocol": "sctp", "hostIP": "127.0.0.1"}]
    assert podspec.node_of(POD) == "node-a" and podspec.uid_of(POD) == "u1"
    assert podspec.node_of(None) == "" and podspec.container_ports({"spec": {}}) == []


def test_running_status_is_ready():
    status = podspec.running_status(["10.244.0.2"], "172.30.0.10", now="T")
    assert status["podIP"] == "10.244.0.2" and status["podIPs"] == [{"ip": "10.244.0.2"}]
    assert status["hostIP"] == "172.30.0.10" and status["phase"] == "Running"
    assert podspec.is_ready({"status": status})


def test_failed_status_is_not_ready_and_says_why():
    pod = {"status": podspec.failed_status("SandboxFailed", "bridge ADD failed", now="T")}
    assert not podspec.is_ready(pod)
    assert podspec.not_ready_reason(pod) == "bridge ADD failed"
    assert podspec.not_ready_reason({"status": {"phase": "Pending"}}) == "Pending"
