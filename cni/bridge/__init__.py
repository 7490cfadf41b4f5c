"""kube-router-bridge: plugin.py is the entry; config, add, check, delete and podns its parts."""
