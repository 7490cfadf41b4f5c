"""The service proxy controller against stateful fakes of its kernel appliers."""
from helpers.proxy_objects import READY, eps, service
from proxyd import cli
from proxyd.k8s.cache import Store
from proxyd.proxy.controller import ServiceProxyController
from proxyd.proxy.ownership import IPVSOwnership


class Recorder:
    """Holds what the controller last asked each applier for, in call order."""

    def __init__(self):
        self.calls = []

    def part(self, name):
        rec = self

        class Part:
            draining = False

            def sync(self, desired):
                rec.calls.append((name, list(desired)))
                return []

            def sync_sets(self, desired):
                rec.calls.append((name, list(desired)))
                return 0

            def cleanup_stale(self, keep):
                rec.calls.append((name + "-cleanup", sorted(keep)))
                return []

            def apply(self, chains, hooks):
                rec.calls.append((name, [c.name for c in chains]))
                return 0
        return Part()


def store(*objs):
    s = Store()
    s.replace(list(objs))
    return s


def node(name="node-a", ip="172.30.0.10", cidr="10.244.0.0/24"):
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def controller(*flags):
    config, _ = cli.parse_args(list(flags))
    rec = Recorder()
    ctl = ServiceProxyController(
        config, "node-a", ipvs=rec.part("ipvs"), vips=rec.part("vips"), ipsets=rec.part("ipsets"),
        tables={(4, t): rec.part(f"iptables-{t}") for t in ("nat", "filter")},
        sysctl=lambda *a: rec.calls.append(("sysctl", a)), addresses=lambda: ["172.30.0.10"],
        load_ipvs=lambda: rec.calls.append(("modprobe ip_vs", ())))
    return ctl, rec


class Ctx:
    full, changes = True, []

    def __init__(self, services, slices, nodes):
        self.stores = {"services": store(*services), "endpointslices": store(*slices),
                       "nodes": store(*nodes)}


def test_sync_order_vips_and_sets_before_ipvs_before_rules_then_stale_sets():
    ctl, rec = controller()
    ctl.sync(Ctx([service("web")], [eps("web", [("10.244.0.2", "node-a", READY)])], [node()]))
    order = [name for name, _ in rec.calls if name not in ("sysctl", "modprobe ip_vs")]
    assert order == ["vips", "ipsets", "ipvs", "iptables-nat", "iptables-filter", "ipsets-cleanup"]
    assert dict(rec.calls)["vips"] == ["10.96.0.10"]
    (vs,) = dict(rec.calls)["ipvs"]
    assert (vs.address, vs.port, [d.address for d in vs.destinations]) == ("10.96.0.10", 80,
                                                                            ["10.244.0.2"])
    assert ("sysctl", ("net/ipv4/vs/conntrack", "1")) in rec.calls


def test_ownership_follows_the_flags_ranges_node_ports_and_exclusions():
    config, _ = cli.parse_args(["--run-service-proxy=true", "--excluded-cidrs=10.96.100.0/24",
                                "--service-external-ip-range=192.0.2.0/24"])
    own = IPVSOwnership.from_config(config, {"172.30.0.10"})
    assert own.owns("TCP", "10.96.0.10", 80)
    assert not own.owns("TCP", "10.96.100.5", 80)            # excluded
    assert own.owns("TCP", "192.0.2.9", 443)                 # external range
    assert own.owns("TCP", "172.30.0.10", 30080)             # NodePort on this node
    assert not own.owns("TCP", "172.30.0.10", 22)            # not a NodePort
    assert not own.owns("TCP", "198.51.100.1", 80)           # someone else's
    assert not IPVSOwnership.from_config(config).owns("TCP", "172.30.0.10", 30080)


def test_external_ip_outside_the_range_is_not_served_and_named():
    ctl, rec = controller("--service-external-ip-range=192.0.2.0/24")
    svc = service("web", externalIPs=["192.0.2.10", "203.0.113.5"])
    ctl.sync(Ctx([svc], [], [node()]))
    served = {vs.address for vs in dict(rec.calls)["ipvs"]}
    assert served == {"10.96.0.10", "192.0.2.10"}
    assert ctl.problems.current == ["Service x/web: external IP 203.0.113.5 is outside "
                             "--service-external-ip-range (not served)"]


def test_an_annotation_this_build_lacks_is_named_and_the_service_still_served():
    ctl, rec = controller()
    svc = service("web", annotations={"kube-router.io/service.dsr": "tunnel"})
    ctl.sync(Ctx([svc], [eps("web", [("10.244.0.2", "node-a", READY)])], [node()]))
    assert ctl.refused.current == ["Service x/web: annotation kube-router.io/service.dsr is not "
                                   "implemented in this build (ignored: DSR; the Service is "
                                   "proxied by NAT)"]
    (vs,) = dict(rec.calls)["ipvs"]
    assert vs.address == "10.96.0.10" and [d.address for d in vs.destinations] == ["10.244.0.2"]
