"""The service proxy's nat and filter rules, written into a real kernel with IPVS.

``-m ipvs`` needs xt_ipvs, which only a kernel with IPVS has. Every rule the
builder writes must read back from iptables-save exactly as written, or the
chain would be rewritten on every sync: the second apply writes nothing.
"""
from __future__ import annotations

import ipaddress

from helpers.proxy_objects import READY, eps, service
from proxyd.kernel import names
from proxyd.kernel.ipset import IPSetApplier
from proxyd.kernel.iptables import TableApplier, canonical_check
from proxyd.proxy.build import NodeView, ProxyFlags, build_proxy
from proxyd.proxy.model import build_model

NODE = NodeView("node-a", {4: "172.30.0.10", 6: "fd00::10"}, ("172.30.0.10",),
                ("10.244.0.0/24", "fd00:244::/64"))
FLAGS = ProxyFlags((4, 6), (ipaddress.ip_network("10.96.0.0/12"),
                            ipaddress.ip_network("fd00:96::/108")), ipvs_permit_all=False)


def test_proxy_rules_converge_in_both_families(netns_factory):
    node = netns_factory("proxy-rules")
    svc = service("web", type_="NodePort", externalTrafficPolicy="Local",
                  annotations={"kube-router.io/service.hairpin": ""})
    v6 = service("web6", cluster_ip="fd00:96::10")
    model = build_model([svc, v6], [eps("web", [("10.244.0.2", "node-a", READY)]),
                                    eps("web6", [("fd00:244::2", "node-a", READY)])])
    desired = build_proxy(model.ports, NODE, FLAGS)

    def apply():
        written = IPSetApplier(names.is_service_set).sync_sets(desired.sets)
        for family, rules in desired.families.items():
            for table, chains, hooks in (("nat", rules.nat, rules.nat_hooks),
                                         ("filter", rules.filter, rules.filter_hooks)):
                applier = TableApplier(family, table, names.is_service_chain)
                written += applier.apply(chains, hooks)
                canonical_check(applier, chains, hooks)   # names any rule printed otherwise
        return written

    assert node.call(apply) > 0
    assert node.call(apply) == 0
    saved = node.exec("iptables-save -t nat").stdout
    assert "-m ipvs --vaddr 10.96.0.10 --vport 80" in saved and "--vmethod MASQ" in saved
