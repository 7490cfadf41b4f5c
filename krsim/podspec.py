"""What a kubelet reads from a Pod object and writes back to it (pure)."""
from __future__ import annotations

import time


def node_of(pod: dict | None) -> str:
    return ((pod or {}).get("spec") or {}).get("nodeName") or ""


def uid_of(pod: dict | None) -> str:
    return ((pod or {}).get("metadata") or {}).get("uid") or ""


def container_ports(pod: dict) -> list[tuple[int, str]]:
    """Every declared (containerPort, protocol), in order, without repeats."""
    out: list[tuple[int, str]] = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            entry = (int(port["containerPort"]), str(port.get("protocol") or "TCP").upper())
            if entry not in out:
                out.append(entry)
    return out


def port_mappings(pod: dict) -> list[dict]:
    """containers[].ports[].hostPort as the CNI ``portMappings`` capability (kubelet's form)."""
    out = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                mapping = {"hostPort": int(port["hostPort"]),
                           "containerPort": int(port["containerPort"]),
                           "protocol": str(port.get("protocol") or "TCP").lower()}
                if port.get("hostIP"):
                    mapping["hostIP"] = port["hostIP"]
                out.append(mapping)
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def running_status(pod_ips: list[str], host_ip: str, now: str | None = None) -> dict:
    """The status a kubelet writes once the sandbox is up and the containers listen."""
    now = now or _now()
    conditions = [{"type": t, "status": "True", "lastTransitionTime": now}
                  for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
    return {"phase": "Running", "podIP": pod_ips[0], "podIPs": [{"ip": ip} for ip in pod_ips],
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "startTime": now,
            "conditions": conditions}


def failed_status(reason: str, message: str, now: str | None = None) -> dict:
    """Pending with Ready False and why: what kubelet shows for a sandbox it cannot create."""
    now = now or _now()
    return {"phase": "Pending", "conditions": [
        {"type": "Ready", "status": "False", "reason": reason, "message": message[:500],
         "lastTransitionTime": now}]}


def is_ready(pod: dict) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def not_ready_reason(pod: dict) -> str:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("message"):
            return cond["message"]
    return (pod.get("status") or {}).get("phase", "Pending")
