"""``kube-router-sim run``: play a scenario's steps against a simulated cluster.

Per step: apply the manifests and deletes to the API server, wait until the
kubelet has every pod Ready and every node's kube-router has synced what was written,
check that deleted pods left no lease or veth, then probe concurrently and
print the matrix.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from krsim import daemon, podspec
from krsim.cluster import Cluster
from krsim.expand import ClusterView, NodeView, PodView, ServiceView, expand_probes
from krsim.probe import Probe, run_probes, sctp_available
from krsim.report import render_matrix, report_json, step_json
from krsim.scenario import Scenario, Step
from lowlevel.apiobjects import service_of_slice

SETTLE_TIMEOUT = 120.0   # generous for the emulated VM; the host needs ~1 s


class SettleError(RuntimeError):
    """Pods did not become Ready (or deleted ones did not go away) in time."""


@dataclass
class StepResult:
    probes: list[Probe] = field(default_factory=list)
    leftovers: dict = field(default_factory=dict)
    leftovers_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.leftovers_ok and all(p.ok for p in self.probes)


def apply_step(cluster: Cluster, step: Step, say) -> None:
    for obj in step.apply:
        meta = obj["metadata"]
        stored = cluster.api.ensure_object(obj)
        where = f"{meta['namespace']}/" if meta.get("namespace") else ""
        extra = ""
        if obj["kind"] == "Service":
            extra = f" (ClusterIP {(stored.get('spec') or {}).get('clusterIP')}, allocated by the API server)"
        say(f"applied {obj['kind']} {where}{meta['name']}{extra}")
    for ref in step.delete:
        cluster.api.delete(ref.kind, ref.namespace, ref.name)
        say(f"deleted {ref.kind} {ref.namespace + '/' if ref.namespace else ''}{ref.name}")


def _settled(cluster: Cluster) -> tuple[bool, list[str]]:
    """(settled, what is still missing) comparing the API's pods with the kubelet's."""
    wanted = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p
              for p in cluster.api.list("Pod") if podspec.node_of(p) in cluster.nodes}
    failed = [f"{key}: {cluster.kubelet.failures[key]}" for key in wanted
              if key in cluster.kubelet.failures]
    if failed:
        raise SettleError("pods failed to start: " + "; ".join(failed))
    waiting = [f"{key} not Ready ({podspec.not_ready_reason(p)})" for key, p in wanted.items()
               if not podspec.is_ready(p) or key not in cluster.pods]
    waiting += [f"{key} still running after delete" for key in cluster.pods if key not in wanted]
    if not waiting:   # the daemons are asked only once the pods they must see exist
        try:
            waiting += daemon.daemons_lagging(cluster.nodes.values(), cluster.world,
                                              cluster.newest_writes(), cluster.controllers)
        except daemon.DaemonDied as e:
            raise SettleError(str(e)) from e
        waiting += cluster.missing_routes()
    return not waiting and cluster.kubelet.idle(), waiting


def wait_settled(cluster: Cluster, timeout: float = SETTLE_TIMEOUT) -> float:
    start = time.monotonic()
    while True:
        done, waiting = _settled(cluster)
        if done:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            logs = "".join(f"\n--- {n.name}: end of kube-router's log ---\n{n.daemon.log_tail(12)}"
                           for n in cluster.nodes.values()
                           if n.daemon and any(n.name in w for w in waiting))
            raise SettleError(f"after {timeout:.0f} s: " + "; ".join(waiting or ["kubelet busy"])
                              + logs)
        time.sleep(0.05)


def describe_endpoints(cluster: Cluster, namespace: str, name: str) -> str:
    """The Service's endpoints as the API server's EndpointSlice controller keeps them."""
    ready = []
    for eps in cluster.api.list("EndpointSlice"):
        if service_of_slice(eps) != f"{namespace}/{name}":
            continue
        ports = ",".join(str(p.get("port")) for p in eps.get("ports") or [])
        for ep in eps.get("endpoints") or []:
            ref = ep.get("targetRef") or {}
            if (ep.get("conditions") or {}).get("ready"):
                ready += [f"{ref.get('name', '?')} {a}:{ports}" for a in ep.get("addresses", [])]
    return (f"Service {namespace}/{name} endpoints (EndpointSlice): "
            + (", ".join(sorted(ready)) or "none ready"))


def cluster_view(cluster: Cluster) -> ClusterView:
    pods = {key: PodView(key, box.node.name, tuple(box.ips), tuple(box.ports + box.skipped_ports),
                         box.netns.path)
            for key, box in cluster.pods.items()}
    nodes = {n.name: NodeView(n.name, n.address, n.netns.path) for n in cluster.nodes.values()}
    services = {}
    for svc in cluster.api.list("Service"):
        meta, spec = svc["metadata"], svc.get("spec") or {}
        key = f"{meta['namespace']}/{meta['name']}"
        services[key] = ServiceView(key, spec.get("clusterIP"), tuple(
            (p["port"], p.get("protocol", "TCP"), p.get("nodePort"))
            for p in spec.get("ports") or []))
    return ClusterView(pods, nodes, services)


def check_leftovers(cluster: Cluster) -> tuple[dict, bool]:
    """Leases and veths must match the running pods: a deleted pod leaves nothing."""
    left = cluster.leftovers()
    ok = all(not n["stale_leases"] and len(n["leases"]) == n["pods"] and
             len(n["veths"]) == n["pods"] for n in left.values())
    return left, ok


def mark_unsupported(probes: list[Probe]) -> None:
    if any(p.protocol == "SCTP" for p in probes) and not sctp_available():
        for p in probes:
            if p.protocol == "SCTP":
                p.skip_reason = "this kernel has no SCTP"


def play_step(cluster: Cluster, step: Step, say, color: bool = False) -> StepResult:
    apply_step(cluster, step, say)
    took = wait_settled(cluster)
    say(f"{len(cluster.pods)} pods Ready, every node's kube-router synced ({took:.1f} s)")
    routes = cluster.bgp_routes()
    if routes != cluster.shown_routes:
        for node, lines in routes.items():
            say(f"{node}: pod routes learned over BGP: {', '.join(lines) or 'none'}")
        cluster.shown_routes = routes
    for obj in step.apply:
        if obj["kind"] == "Service":
            say(describe_endpoints(cluster, obj["metadata"]["namespace"], obj["metadata"]["name"]))
    result = StepResult()
    result.leftovers, result.leftovers_ok = check_leftovers(cluster)
    for node, what in result.leftovers.items():
        say(f"{node}: pods {what['pods']}, IP leases {len(what['leases'])}, "
            f"pod veths {len(what['veths'])}" + ("" if result.leftovers_ok else "  <- MISMATCH")
            + "; firewall: {pod_chains} pod chains, {policy_chains} policy chains, "
              "{ipsets} ipsets".format(**what["firewall"]))
    probes = expand_probes(cluster_view(cluster), step)
    mark_unsupported(probes)
    started = time.monotonic()
    result.probes = run_probes(probes)
    say(f"{len(probes)} probes in {time.monotonic() - started:.1f} s")
    if probes:
        say(render_matrix(result.probes, color).replace("\n", "\n   "))
    for p in result.probes:
        if p.target not in cluster.pods and not p.skip_reason:
            say(f"{p.source:14} -> {p.target} {p.address}:{p.port}/{p.protocol.lower()}  "
                f"answered by {', '.join(a or 'nobody' for a in p.answered_by)}")
    return result


def play(scenario: Scenario, out=print, color: bool = False,
         cluster_factory=Cluster) -> tuple[bool, list[StepResult], dict]:
    """Run every step; returns (ok, step results, the JSON report)."""
    results: list[StepResult] = []
    out(f"== Building cluster: nodes {', '.join(scenario.nodes)}")
    with cluster_factory(list(scenario.nodes), log=lambda m: out("   " + m)) as cluster:
        for index, step in enumerate(scenario.steps):
            title = f": {step.title}" if step.title else ""
            out(f"== Step {index + 1}/{len(scenario.steps)}{title}")
            results.append(play_step(cluster, step, lambda m: out("   " + m), color))
        out("== Tearing down (CNI DEL for every pod, namespaces removed)")
    report = report_json([step_json(r.probes, r.leftovers, r.leftovers_ok) for r in results])
    return report["ok"], results, report
