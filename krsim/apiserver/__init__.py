"""An in-memory Kubernetes API server speaking the real REST + watch protocol.

It serves the kinds kube-router watches (Namespace, Node, Pod, Service,
EndpointSlice, NetworkPolicy), applies the API server's defaulting, and runs
the controllers a cluster would (ClusterIP/NodePort and pod-CIDR allocation,
EndpointSlices) synchronously on every write, so its behaviour is
deterministic. ``python -m krsim.apiserver --port N`` runs it.
"""
from krsim.apiserver.server import ApiServer, ServerConfig

__all__ = ["ApiServer", "ServerConfig"]
