"""Small factories for the Service and EndpointSlice objects the proxy tests feed the builder,
and the caches and changes the proxy controller syncs from."""


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


NODE = {"metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.10"}]}}


class ProxyWorld:
    """The informer caches of one node's proxy: ``n`` NodePort Services, one endpoint each."""

    def __init__(self, n=30):
        from proxyd.k8s.cache import Store
        self.stores = {"services": Store(), "endpointslices": Store(), "nodes": Store()}
        self.stores["services"].replace([
            service(f"s{i}", cluster_ip=f"10.96.1.{i}", type_="NodePort",
                    ports=[{"name": "http", "port": 80, "nodePort": 30000 + i}])
            for i in range(n)])
        self.stores["endpointslices"].replace([
            eps(f"s{i}", [(f"10.244.0.{i + 2}", "node-a", READY)]) for i in range(n)])
        self.stores["nodes"].replace([NODE])
        self.version = 100

    def put(self, kind, obj, key=None):
        """Write ``obj`` (None: delete ``key``) into its cache; the change a tracker records."""
        from proxyd.k8s.tracker import Change
        store = self.stores[kind]
        key = key or f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        old = store.get(key)
        self.version += 1
        if obj is None:
            store.apply(old, deleted=True)
        else:
            obj["metadata"]["resourceVersion"] = str(self.version)
            store.apply(obj)
        return Change(kind, key, old, obj)

    def sync(self, ctl, *changes, full=False):
        from proxyd.daemon import SyncContext
        ctl.sync(SyncContext(self.stores, list(changes), full))
