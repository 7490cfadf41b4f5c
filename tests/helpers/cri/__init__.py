"""Driving containerd's CRI the way kubelet does: a gRPC client over our own
minimal runtime.v1 proto, a locally built busybox image, and a private containerd."""
