"""The tests' namespaces: the simulator's namespace toolkit with the tests' own prefix.

Every namespace a test makes starts with ``PREFIX`` so the session-end check in
conftest.py can prove none leaked.
"""
import functools

from krsim import netns as _sim
from krsim.netns import run, veth_pair, wait_for  # noqa: F401  (re-exported)

PREFIX = "krt-"


class Netns(_sim.Netns):
    def __init__(self, role: str = "ns"):
        super().__init__(role, prefix=PREFIX)


leaked_namespaces = functools.partial(_sim.leaked_namespaces, PREFIX)
