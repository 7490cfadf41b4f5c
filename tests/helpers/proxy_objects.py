"""Small factories for the Service and EndpointSlice objects the proxy tests feed the builder."""


def service(name, ns="x", ports=({"name": "http", "port": 80, "targetPort": 8080},), type_="ClusterIP",
            cluster_ip="10.96.0.10", annotations=None, **spec):
    ports = [dict(p) for p in ports]
    for i, p in enumerate(ports):
        if type_ in ("NodePort", "LoadBalancer"):
            p.setdefault("nodePort", 30080 + i)
    return {"metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": {"type": type_, "clusterIP": cluster_ip, "clusterIPs": [cluster_ip] if cluster_ip else [],
                     "ports": ports, **spec}}


def eps(name, endpoints, ns="x", ports=({"name": "http", "port": 8080, "protocol": "TCP"},)):
    return {"metadata": {"name": f"{name}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": list(ports),
            "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": cond}
                          for ip, node, cond in endpoints]}


READY = {"ready": True, "serving": True, "terminating": False}
TERMINATING = {"ready": False, "serving": True, "terminating": True}
