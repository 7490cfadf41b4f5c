"""CNI plugins the container runtime execs: bridge, host-local IPAM and portmap.

This package is the start-up hot path: every module imported here costs time on
every pod ADD and DEL, so it imports only the standard library it needs.
"""
