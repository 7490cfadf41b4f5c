"""The simulator's kubelet: pods bound to a node become namespaces plumbed by CNI.

One informer watches Pods through the API server's HTTP watch (as a kubelet
does); each node has a worker that, per pod key, compares what the API wants
with the sandbox it runs: a new pod gets a namespace, CNI ADD (hostPorts as
``portMappings``), a responder on its declared ports, and a Running/Ready status
through ``/status``; a deleted (or replaced) pod gets CNI DEL and its namespace
removed.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field

from proxyd.k8s.client import KINDS, KubeClient, build_configuration
from proxyd.k8s.informer import Informer
from krsim import podspec
from krsim.cniruntime import Attachment
from krsim.netns import Netns
from krsim.probe import sctp_available

log = logging.getLogger(__name__)
SYNC_TIMEOUT = 120   # generous: Python runs ~20x slower in the emulated VM (`run --vm`)


@dataclass
class Sandbox:
    """A running pod: its namespace, its CNI attachment and its listener."""
    namespace: str
    name: str
    uid: str
    node: object                    # cluster.Node
    netns: Netns
    ports: list = field(default_factory=list)        # (port, protocol) listened on
    host_ports: list = field(default_factory=list)
    skipped_ports: list = field(default_factory=list)
    attachment: Attachment | None = None
    ips: list = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class _NodeQueue:
    """Pod keys waiting for one node's worker; a key queued twice is synced once."""

    def __init__(self):
        self.keys: list[str] = []
        self.busy = False


class Kubelet:
    def __init__(self, cluster, api, log_line=print):
        self.cluster = cluster
        self.api = api
        self.say = log_line
        self.sandboxes: dict[str, Sandbox] = {}
        self.failures: dict[str, str] = {}
        self.sctp = sctp_available()
        self._queues = {name: _NodeQueue() for name in cluster.nodes}
        self._cond = threading.Condition()
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self._client: KubeClient | None = None
        self._informer: Informer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._client = KubeClient(build_configuration(master=self.cluster.api_url))
        self._informer = Informer(self._client, KINDS["pods"], watch_timeout=60)
        self._informer.add_handler(self._on_event)
        # Threads started from a thread inside the world namespace stay there, so the
        # informer's and the workers' connections to the API server are made from it.
        self.cluster.world.call(self._start_threads)
        if not self._informer.wait_for_sync(SYNC_TIMEOUT):
            raise RuntimeError(f"the kubelet's pod informer did not sync within {SYNC_TIMEOUT} s")

    def _start_threads(self) -> None:
        self._informer.start()
        for node in self._queues:
            t = threading.Thread(target=self._work, args=(node,), name=f"kubelet-{node}",
                                 daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._informer is not None:
            self._informer.stop()
        for t in self._workers:
            t.join(timeout=60)
        if self._client is not None:
            self._client.close()

    def idle(self) -> bool:
        with self._cond:
            return all(not q.keys and not q.busy for q in self._queues.values())

    # -- events -> per-node queues ---------------------------------------------------------
    def _on_event(self, _kind: str, old: dict | None, new: dict | None) -> None:
        obj = new if new is not None else old
        key = f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        nodes = {podspec.node_of(old), podspec.node_of(new)} & set(self._queues)
        with self._cond:
            for node in nodes:
                if key not in self._queues[node].keys:
                    self._queues[node].keys.append(key)
            self._cond.notify_all()

    def _work(self, node: str) -> None:
        queue = self._queues[node]
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or queue.keys)
                if self._stopping:
                    return
                key = queue.keys.pop(0)
                queue.busy = True
            try:
                self.sync_pod(key, node)
            except Exception as exc:  # one pod's trouble must not stop the node's kubelet
                log.exception("syncing pod %s failed", key)
                self.failures[key] = str(exc)
            finally:
                with self._cond:
                    queue.busy = False
                    self._cond.notify_all()

    # -- reconcile one pod -----------------------------------------------------------------
    def sync_pod(self, key: str, node: str) -> None:
        want = self._informer.store.get(key)
        if want is not None and podspec.node_of(want) != node:
            want = None
        have = self.sandboxes.get(key)
        if have is not None and have.node.name == node and \
                (want is None or podspec.uid_of(want) != have.uid):
            self.teardown(key)
            self.say(f"pod {key} on {node}: removed (CNI DEL, namespace deleted)")
        if want is not None and key not in self.sandboxes and not self._stopping:
            self._setup(want, node)

    def _setup(self, pod: dict, node_name: str) -> None:
        meta = pod["metadata"]
        node = self.cluster.nodes[node_name]
        key = f"{meta['namespace']}/{meta['name']}"
        ports = podspec.container_ports(pod)
        box = Sandbox(meta["namespace"], meta["name"], podspec.uid_of(pod), node,
                      Netns(f"{meta['namespace']}.{meta['name']}"),
                      [p for p in ports if p[1] != "SCTP" or self.sctp],
                      podspec.port_mappings(pod),
                      [p for p in ports if p[1] == "SCTP" and not self.sctp])
        self.sandboxes[key] = box   # recorded first: teardown finds a half-made sandbox
        try:
            box.attachment = Attachment(
                container_id=uuid.uuid4().hex, netns=box.netns.path, ifname="eth0",
                args={"K8S_POD_NAMESPACE": box.namespace, "K8S_POD_NAME": box.name,
                      "K8S_POD_INFRA_CONTAINER_ID": "", "K8S_POD_UID": box.uid,
                      "IgnoreUnknown": "1"},
                capability_args={"portMappings": box.host_ports} if box.host_ports else {})
            result = node.runtime.add(box.attachment)
            box.ips = [ip["address"].split("/")[0] for ip in result.get("ips", [])]
            self._start_responder(box)
        except Exception as exc:
            self.failures[key] = str(exc)
            self.teardown(key)
            self.api.patch_status("Pod", box.namespace, box.name,
                                  podspec.failed_status("SandboxFailed", str(exc)))
            self.say(f"pod {key} on {node_name}: FAILED: {exc}")
            return
        self.failures.pop(key, None)
        self.api.patch_status("Pod", box.namespace, box.name,
                              podspec.running_status(box.ips, node.address))
        extra = f", SCTP ports {box.skipped_ports} skipped (no SCTP in this kernel)" \
            if box.skipped_ports else ""
        hp = ", hostPorts " + ", ".join(f"{m['hostPort']}->{m['containerPort']}/"
                                        f"{m['protocol']}" for m in box.host_ports) \
            if box.host_ports else ""
        self.say(f"pod {key} on {node_name}: {', '.join(box.ips)}{hp}{extra}")

    def _start_responder(self, box: Sandbox) -> None:
        if not box.ports:
            return
        argv = [sys.executable, "-m", "krsim.responder", box.key]
        for port, proto in box.ports:
            argv += [f"--{proto.lower()}", str(port)]
        proc = box.netns.popen(argv, stdin=subprocess.DEVNULL)
        line = proc.stdout.readline().decode().strip()
        if line != "ready":
            proc.wait(timeout=5)
            raise RuntimeError(f"listener of {box.key} did not start: "
                               f"{proc.stderr.read().decode(errors='replace')[-500:]}")

    def teardown(self, key: str) -> None:
        box = self.sandboxes.pop(key)
        try:
            if box.attachment is not None and box.attachment.result is not None:
                box.node.runtime.delete(box.attachment)
        finally:
            box.netns.delete()

    def teardown_all(self) -> list[str]:
        errors = []
        for key in list(self.sandboxes):
            try:
                self.teardown(key)
            except Exception as exc:  # keep tearing down; report at the end
                errors.append(f"{key}: {exc}")
        return errors
