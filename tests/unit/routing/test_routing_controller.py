"""The routing controller's reconciliation against stateful fakes of gobgpd and the kernel."""
import pytest

from proxyd import cli
from proxyd.k8s.cache import Store
from proxyd.routing.bgp import Path, PeerState
from proxyd.routing.controller import RoutingController


class FakeGobgpd:
    api_target = "127.0.0.1:50051"

    def __init__(self):
        self.alive, self.starts, self.returncode = False, 0, None

    def start(self):
        self.alive, self.starts = True, self.starts + 1

    def stop(self):
        self.alive = False


class FakeSpeaker:
    """gobgpd's state as the controller can change and read it."""

    def __init__(self, target):
        self.started = None
        self.configured, self.adverts, self.learned, self.watching = {}, set(), [], 0
        self.down: set[str] = set()      # configured peers whose session is not established

    def start(self, asn, router_id, listen_port=179, **_):
        assert self.started is None, "StartBgp twice"
        self.started = (asn, router_id, listen_port)

    def stop(self):
        self.started, self.configured, self.adverts = None, {}, set()

    def add_peer(self, peer):
        assert peer.address not in self.configured
        self.configured[peer.address] = peer

    def delete_peer(self, address):
        del self.configured[address]

    def peers(self):
        return [PeerState(a, p.asn, "active" if a in self.down else "established")
                for a, p in sorted(self.configured.items())]

    def advertise(self, prefix, nexthop):
        self.adverts.add((prefix, nexthop))

    def withdraw(self, prefix, nexthop):
        self.adverts.remove((prefix, nexthop))

    def paths(self, family):
        local = [Path(p, n, best=True, local=True) for p, n in self.adverts]
        return local + [p for p in self.learned if (":" in p.prefix) == family.startswith("ipv6")]

    def watch_best_paths(self, callback, on_error=None, **_):
        self.watching += 1
        return type("Watch", (), {"running": True, "stop": lambda self: None})()

    def close(self):
        pass


class FakeRoutes:
    def __init__(self, installed=()):
        self.tunnels, self.routes = [], []
        self.found = list(installed)     # (prefix, next hop) of ours in the kernel at start

    def installed(self):
        return self.found

    def sync_tunnels(self, desired):
        self.tunnels = list(desired)
        return []

    def sync_routes(self, desired):
        self.routes = list(desired)
        return []


class Ctx:
    def __init__(self, store, services=(), slices=()):
        self.stores = {"nodes": store, "services": Store(), "endpointslices": Store()}
        self.stores["services"].replace(list(services))
        self.stores["endpointslices"].replace(list(slices))


def node(name, ip, cidr, **annotations):
    return {"metadata": {"name": name, "resourceVersion": "1", "annotations": annotations},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(*flags, installed=()):
    config, _ = cli.parse_args(["--run-router=true", "--enable-pod-egress=false", *flags])
    speakers = []

    def factory(target):
        speakers.append(FakeSpeaker(target))
        return speakers[-1]
    ctl = RoutingController(config, "node-a", gobgpd=FakeGobgpd(), speaker_factory=factory,
                            routes=FakeRoutes(installed), connected=lambda: ["172.30.0.0/24"],
                            clock=Clock(), sysctl=lambda key, value: False)
    return ctl, speakers


def two_nodes():
    return store(node("node-a", "172.30.0.10", "10.244.0.0/24"),
                 node("node-b", "172.30.0.11", "10.244.1.0/24"))


def store(*nodes):
    s = Store()
    s.replace(list(nodes))
    return s


def test_first_sync_starts_gobgpd_peers_every_node_and_advertises_the_pod_cidr():
    ctl, speakers = make()
    nodes = two_nodes()
    ctl.sync(Ctx(nodes))
    sp = speakers[0]
    assert ctl.gobgpd.starts == 1 and sp.started == (64512, "172.30.0.10", 179)
    assert list(sp.configured) == ["172.30.0.11"] and sp.adverts == {("10.244.0.0/24", "172.30.0.10")}
    # node-b's advert arrives: a direct route via node-b on the shared subnet
    sp.learned = [Path("10.244.1.0/24", "172.30.0.11", "172.30.0.11", best=True)]
    ctl.sync(Ctx(nodes))
    assert [(r.prefix, r.gateway) for r in ctl.routes.routes] == [("10.244.1.0/24", "172.30.0.11")]
    # node-b leaves: its peer goes; the learned path is withdrawn by gobgpd itself
    sp.learned = []
    ctl.sync(Ctx(store(node("node-a", "172.30.0.10", "10.244.0.0/24"))))
    assert sp.configured == {} and ctl.routes.routes == [] and ctl.gobgpd.starts == 1


def test_gobgpd_crash_restarts_it_and_restores_peers_and_adverts():
    ctl, speakers = make()
    nodes = two_nodes()
    ctl.sync(Ctx(nodes))
    ctl.gobgpd.alive = False                     # it died
    ctl.sync(Ctx(nodes))
    fresh = speakers[-1]
    assert ctl.gobgpd.starts == 2 and len(speakers) == 2
    assert list(fresh.configured) == ["172.30.0.11"] and fresh.adverts == {("10.244.0.0/24", "172.30.0.10")}


def test_asn_annotation_change_restarts_the_speaker_and_a_bad_node_is_skipped():
    ctl, speakers = make()
    a = node("node-a", "172.30.0.10", "10.244.0.0/24")
    broken = {"metadata": {"name": "node-x"}, "spec": {}, "status": {}}
    ctl.sync(Ctx(store(a, node("node-b", "172.30.0.11", "10.244.1.0/24"), broken)))
    assert ctl.problems.current == ["node node-x has no InternalIP or ExternalIP"]
    rr = node("node-a", "172.30.0.10", "10.244.0.0/24", **{"kube-router.io/rr.server": "1"})
    ctl.sync(Ctx(store(rr)))
    assert ctl.problems.current == ["node node-a: annotation kube-router.io/rr.server is not "
                                    "implemented in this build (ignored: route reflectors)"]
    a2 = node("node-a", "172.30.0.10", "10.244.0.0/24", **{"kube-router.io/node.asn": "65010"})
    ctl.sync(Ctx(store(a2, node("node-b", "172.30.0.11", "10.244.1.0/24"))))
    sp = speakers[0]
    assert sp.started == (65010, "172.30.0.10", 179)
    assert sp.configured == {}                       # node-b is in another AS now: no iBGP
    assert sp.adverts == {("10.244.0.0/24", "172.30.0.10")}


def test_missing_own_node_fails_the_sync_naming_it():
    ctl, _ = make()
    try:
        ctl.sync(Ctx(store(node("node-b", "172.30.0.11", "10.244.1.0/24"))))
    except ValueError as e:
        assert "node-a" in str(e)
    else:
        raise AssertionError("a sync without this node's Node object must fail")


def test_cluster_ips_advertised_with_the_flag_per_service_override_and_local_policy():
    ctl, speakers = make("--advertise-cluster-ip")
    svc = lambda name, ip, **spec: {"metadata": {"name": name, "namespace": "x",  # noqa: E731
                                                 "annotations": spec.pop("annotations", {})},
                                    "spec": {"clusterIP": ip, "clusterIPs": [ip], **spec}}
    services = [svc("web", "10.96.0.10"),
                svc("quiet", "10.96.0.11",
                    annotations={"kube-router.io/service.advertise.clusterip": "false"}),
                svc("local-here", "10.96.0.12", internalTrafficPolicy="Local"),
                svc("local-elsewhere", "10.96.0.13", internalTrafficPolicy="Local"),
                svc("headless", "None")]
    slices = [{"metadata": {"name": f"{n}-1", "namespace": "x",
                            "labels": {"kubernetes.io/service-name": n}},
               "endpoints": [{"addresses": ["10.244.9.9"], "nodeName": where,
                              "conditions": {"ready": True}}]}
              for n, where in (("local-here", "node-a"), ("local-elsewhere", "node-b"))]
    ctl.sync(Ctx(two_nodes(), services, slices))
    assert speakers[0].adverts == {("10.244.0.0/24", "172.30.0.10"), ("10.96.0.10/32", "172.30.0.10"),
                                   ("10.96.0.12/32", "172.30.0.10")}
    # the same VIP learned from node-b is not routed away from this node
    speakers[0].learned = [Path("10.96.0.10/32", "172.30.0.11", "172.30.0.11", best=True)]
    ctl.sync(Ctx(two_nodes(), services, slices))
    assert ctl.routes.routes == []


def routed(ctl):
    return [(r.prefix, r.gateway) for r in ctl.routes.routes]


def test_a_restarted_daemon_keeps_the_routes_it_finds_until_its_peers_caught_up():
    ctl, speakers = make(installed=[("10.244.1.0/24", "172.30.0.11")])
    nodes = two_nodes()
    ctl.sync(Ctx(nodes))                     # a new gobgpd: empty RIB, session not up yet
    sp = speakers[0]
    sp.down = {"172.30.0.11"}
    ctl.sync(Ctx(nodes))
    assert routed(ctl) == [("10.244.1.0/24", "172.30.0.11")]
    ctl._clock.now += 60
    sp.down = set()                          # established, but not for long enough yet
    ctl.sync(Ctx(nodes))
    assert routed(ctl) == [("10.244.1.0/24", "172.30.0.11")]
    ctl._clock.now += 3                      # caught up, and node-b announces nothing
    ctl.sync(Ctx(nodes))
    assert routed(ctl) == []


def test_gobgpd_crash_keeps_the_learned_routes_until_the_peer_is_back():
    ctl, speakers = make()
    nodes = two_nodes()
    ctl.sync(Ctx(nodes))
    speakers[0].learned = [Path("10.244.1.0/24", "172.30.0.11", "172.30.0.11", best=True)]
    ctl._clock.now += 5
    ctl.sync(Ctx(nodes))
    ctl.gobgpd.alive = False                 # it died; the new one knows nothing yet
    ctl.sync(Ctx(nodes))
    assert len(speakers) == 2 and routed(ctl) == [("10.244.1.0/24", "172.30.0.11")]
    # --bgp-graceful-restart-time (90 s by default) bounds the wait for a peer that stays quiet.
    speakers[1].down = {"172.30.0.11"}
    ctl._clock.now += 89
    ctl.sync(Ctx(nodes))
    assert routed(ctl) == [("10.244.1.0/24", "172.30.0.11")]
    ctl._clock.now += 2
    ctl.sync(Ctx(nodes))
    assert routed(ctl) == []
