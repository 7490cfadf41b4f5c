"""API defaulting, as the real server fills in fields a client leaves out."""
from __future__ import annotations


def default_namespace(obj: dict) -> None:
    meta = obj["metadata"]
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {})["phase"] = "Active"


def default_pod(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("imagePullPolicy", "IfNotPresent")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", "BestEffort")


def default_service(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if spec.get("sessionAffinity") == "ClientIP":
        spec.setdefault("sessionAffinityConfig", {"clientIP": {"timeoutSeconds": 10800}})
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def default_service_families(spec: dict, families: list[str]) -> None:
    """ipFamilies/ipFamilyPolicy once the cluster's families and the clusterIPs are known."""
    if spec.get("type") == "ExternalName":
        return
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    if not spec.get("ipFamilies"):
        wanted = 2 if spec["ipFamilyPolicy"] == "RequireDualStack" else 1
        if spec["ipFamilyPolicy"] == "PreferDualStack":
            wanted = len(families)
        spec["ipFamilies"] = families[:wanted]


def default_network_policy(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("podSelector", {})
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for rule in (spec.get("ingress") or []) + (spec.get("egress") or []):
        for port in rule.get("ports") or []:
            port.setdefault("protocol", "TCP")


def default_endpoint_slice(obj: dict) -> None:
    for port in obj.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("name", "")
    for endpoint in obj.get("endpoints") or []:
        endpoint.setdefault("conditions", {}).setdefault("ready", True)


def default_node(obj: dict) -> None:
    obj.setdefault("spec", {})
    obj.setdefault("status", {}).setdefault("daemonEndpoints", {"kubeletEndpoint": {"Port": 0}})


DEFAULTERS = {
    "namespaces": default_namespace,
    "pods": default_pod,
    "services": default_service,
    "networkpolicies": default_network_policy,
    "endpointslices": default_endpoint_slice,
    "nodes": default_node,
}
