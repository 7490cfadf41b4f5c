"""A small CRI v1 client: gRPC over containerd's unix socket.

The stubs are compiled from ``runtime_v1.proto`` at first use with grpc_tools
into a temporary directory (about 0.1 s), so nothing generated is kept in the tree.
"""
from __future__ import annotations

import atexit
import functools
import importlib
import pathlib
import shutil
import subprocess
import sys
import tempfile
import types

PROTO = pathlib.Path(__file__).with_name("runtime_v1.proto")


@functools.cache
def compile_stubs() -> tuple[types.ModuleType, types.ModuleType]:
    """(runtime_v1_pb2, runtime_v1_pb2_grpc), compiled from PROTO."""
    out = tempfile.mkdtemp(prefix="krt-cri-stubs-")
    atexit.register(shutil.rmtree, out, True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}",
                    f"--python_out={out}", f"--grpc_python_out={out}", PROTO.name],
                   check=True, capture_output=True, timeout=60)
    # The generated *_grpc module imports its message module by bare name.
    sys.path.insert(0, out)
    try:
        pb2 = importlib.import_module("runtime_v1_pb2")
        pb2_grpc = importlib.import_module("runtime_v1_pb2_grpc")
    finally:
        sys.path.remove(out)
    return pb2, pb2_grpc


class CriClient:
    """RuntimeService and ImageService calls with a deadline on each."""

    def __init__(self, socket_path: str, timeout: float = 30.0):
        import grpc

        self.pb, pb_grpc = compile_stubs()
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.runtime = pb_grpc.RuntimeServiceStub(self._channel)
        self.images = pb_grpc.ImageServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def version(self):
        return self.runtime.Version(self.pb.VersionRequest(version="v1"), timeout=self.timeout)

    def image_status(self, ref: str):
        req = self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=ref))
        return self.images.ImageStatus(req, timeout=self.timeout).image

    def sandbox_config(self, name: str, uid: str, namespace: str = "default",
                       port_mappings=(), log_directory: str = "", cgroup_parent: str = ""):
        """A PodSandboxConfig; ``port_mappings`` are (host_port, container_port, proto)."""
        pb = self.pb
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace),
            hostname=name, log_directory=log_directory,
            port_mappings=[pb.PortMapping(host_port=h, container_port=c,
                                          protocol=pb.Protocol.Value(proto.upper()))
                           for h, c, proto in port_mappings],
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent))

    def run_pod_sandbox(self, config) -> str:
        req = self.pb.RunPodSandboxRequest(config=config)
        return self.runtime.RunPodSandbox(req, timeout=self.timeout).pod_sandbox_id

    def pod_sandbox_status(self, sandbox_id: str):
        req = self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
        return self.runtime.PodSandboxStatus(req, timeout=self.timeout).status

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        req = self.pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
        self.runtime.StopPodSandbox(req, timeout=self.timeout)

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        req = self.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        self.runtime.RemovePodSandbox(req, timeout=self.timeout)

    def create_container(self, sandbox_id: str, sandbox_config, name: str, image: str,
                         command: list[str], log_path: str = "") -> str:
        pb = self.pb
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                    image=pb.ImageSpec(image=image), command=command,
                                    log_path=log_path)
        req = pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config,
                                        sandbox_config=sandbox_config)
        return self.runtime.CreateContainer(req, timeout=self.timeout).container_id

    def start_container(self, container_id: str) -> None:
        req = self.pb.StartContainerRequest(container_id=container_id)
        self.runtime.StartContainer(req, timeout=self.timeout)

    def container_status(self, container_id: str):
        req = self.pb.ContainerStatusRequest(container_id=container_id)
        return self.runtime.ContainerStatus(req, timeout=self.timeout).status

    def stop_container(self, container_id: str, grace: int = 0) -> None:
        req = self.pb.StopContainerRequest(container_id=container_id, timeout=grace)
        self.runtime.StopContainer(req, timeout=self.timeout)

    def remove_container(self, container_id: str) -> None:
        req = self.pb.RemoveContainerRequest(container_id=container_id)
        self.runtime.RemoveContainer(req, timeout=self.timeout)
