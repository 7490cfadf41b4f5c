"""Fixtures of the daemon tests: a local API server and a client pointed at it."""
import pytest

from fakeapi import FakeApiServer
from proxyd.k8s.client import KINDS, KubeClient, build_configuration


@pytest.fixture
def api():
    server = FakeApiServer([k.path for k in KINDS.values()])
    yield server
    server.close()


@pytest.fixture
def kube(api):
    client = KubeClient(build_configuration(master=api.url))
    yield client
    client.close()
