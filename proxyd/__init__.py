"""kube-router: the node daemon (service proxy, network policy, pod routing)."""
