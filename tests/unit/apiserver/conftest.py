"""Fixtures: an in-memory API server on 127.0.0.1 (port 0) and official-client handles to it."""
from __future__ import annotations

import pytest
from kubernetes import client

from apiserver_helpers import make_client
from krsim.apiserver import ApiServer, ServerConfig


@pytest.fixture
def server_factory():
    started: list[ApiServer] = []

    def make(**overrides) -> ApiServer:
        config = ServerConfig(**{"bookmark_interval": 0.5, **overrides})
        server = ApiServer(config).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def apiserver(server_factory) -> ApiServer:
    return server_factory()


@pytest.fixture
def api_client(apiserver):
    with make_client(apiserver) as api:
        yield api


@pytest.fixture
def core(api_client) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def discovery_api(api_client) -> client.DiscoveryV1Api:
    return client.DiscoveryV1Api(api_client)


@pytest.fixture
def networking(api_client) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(api_client)
