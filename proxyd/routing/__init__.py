"""BGP routing: GoBGP's gobgpd as the engine, driven over its gRPC API.

``gobgpd`` supervises the child process, ``bgp`` is the typed client the router
controller talks to; ``gobgp_api`` holds the generated stubs.
"""
