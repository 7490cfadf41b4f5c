"""kube-router-cni: generate, validate, update and install the CNI configuration."""
