"""host-local IPAM: allocation ranges (pure) and the on-disk lease store."""
