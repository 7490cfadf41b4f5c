"""The harness around the product, never imported by it: the embedded API server
(``krsim.apiserver``, ``python -m krsim.apiserver``) and ``kube-router-sim``, a real
multi-node cluster in network namespaces that runs the same binaries a user runs."""
