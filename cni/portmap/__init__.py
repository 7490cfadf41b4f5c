"""kube-router-portmap: plugin.py is the entry; config and rules (pure) its parts."""
