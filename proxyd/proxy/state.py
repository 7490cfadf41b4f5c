"""The node's service proxy kept per Service, updated one change at a time (pure).

``ProxyState`` holds what build.py assembles from scratch -- IPVS services,
VIPs, guard-set entries, the SNAT chain -- as one ``Fragment`` per Service,
and keeps the joined view current at the cost of what a change touches:
  * a Service or one of its EndpointSlices rebuilds that Service's fragment
    alone (its slices are indexed by the Service that owns them);
  * the joined view counts who holds each VIP and set entry, so a VIP two
    Services share stays until the last one goes; an IPVS key two Services
    claim goes to the last in Service order, as build.py gives it;
  * the node's own addresses rebuild every fragment (NodePorts sit on them);
    another node's pod CIDRs change only the pod-subnet set.
``take_delta()`` hands over what changed since its last call; the appliers
write only what differs from what they applied.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping

from lowlevel.apiobjects import node_addresses, pod_cidrs, service_of_slice
from proxyd import controllers
from proxyd.k8s.cache import object_key
from proxyd.kernel.ipvs_table import canonical
from proxyd.kernel.state import Chain, IPSet, VirtualService
from proxyd.proxy.build import (DesiredProxy, Fragment, NodeView, ProxyFlags, family_rules,
                                family_sets, guard_set_names, pod_set, service_fragment,
                                snat_chain, sort_vips)
from proxyd.proxy.model import ServiceError, ServicePort, service_ports

Key = tuple[str, str, int]          # (protocol, canonical address, port), as IPVSApplier keys
_PROBLEMS = (ServiceError, ValueError, TypeError, KeyError)


@dataclass
class ProxyDelta:
    services: dict[Key, VirtualService | None] = field(default_factory=dict)   # None: gone
    vips_added: set[str] = field(default_factory=set)
    vips_removed: set[str] = field(default_factory=set)
    sets: dict[str, IPSet] = field(default_factory=dict)
    chains: dict[int, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.services or self.vips_added or self.vips_removed or self.sets
                    or self.chains)


def ipvs_key(vs: VirtualService) -> Key:
    return vs.protocol, canonical(vs.address), vs.port


class ProxyState:
    def __init__(self, node: str, flags: ProxyFlags, hairpin_all: bool = False,
                 check: Callable[[ServicePort, list[str]], ServicePort] | None = None):
        """check(port, problems): the port as it may be served (strict external IPs)."""
        self.flags, self.hairpin_all, self._check = flags, hairpin_all, check
        self.view = NodeView(node, {})
        self.node_cidrs: dict[str, tuple[str, ...]] = {}
        self.objects: dict[str, Mapping] = {}                # Service key -> Service
        self.slices: dict[str, dict[str, Mapping]] = {}      # Service key -> its slices by key
        self.slice_owner: dict[str, str] = {}
        self.fragments: dict[str, Fragment] = {}
        self.problems: dict[str, list[str]] = {}
        self.refused: dict[str, list[str]] = {}
        self.claims: dict[Key, dict[str, VirtualService]] = {}
        self.vips: Counter[str] = Counter()
        self.members: Counter[tuple[str, str]] = Counter()
        self._snat: dict[str, Fragment] = {}                 # fragments with SNAT rules
        self.chains: dict[int, Chain] = {}
        self._key_was: dict[Key, VirtualService | None] = {}
        self._vip_was: dict[str, bool] = {}
        self._touched_sets: set[str] = set()
        self._snat_dirty = True

    # ---- what the controller reads -------------------------------------------------------
    def problem_list(self) -> list[str]:
        return [line for k in sorted(self.problems) for line in self.problems[k]]

    def refused_list(self) -> list[str]:
        return [line for k in sorted(self.refused) for line in self.refused[k]]

    def service(self, key: Key) -> VirtualService | None:
        owners = self.claims.get(key)
        return owners[max(owners)] if owners else None

    def desired(self) -> DesiredProxy:
        """The whole state, as build_proxy gives it (services in key order)."""
        out = DesiredProxy(services=[self.service(k) for k in sorted(self.claims)],
                           vips=sort_vips(self.vips))
        for family in self.flags.families:
            out.sets += family_sets(family, self.view, self.members)
            out.families[family] = family_rules(family, *self._snat_rules(family), self.view,
                                                self.flags)
        return out

    # ---- changes --------------------------------------------------------------------------
    def load(self, services: Iterable[Mapping], slices: Iterable[Mapping],
             nodes: Iterable[Mapping], local_addresses: Iterable[str] = ()) -> None:
        """Everything from the caches (the full resync); follow with ``desired()``."""
        self.view = replace(self.view, local_addresses=tuple(local_addresses))
        for obj in nodes:
            self.node_changed(object_key(obj), obj)
        for obj in slices:
            self._slice_moved(object_key(obj), obj)
        for obj in services:
            self.objects[object_key(obj)] = obj
        for key in sorted(self.objects):
            self._refresh(key)
        self.take_delta()

    def update(self, changes: Iterable) -> ProxyDelta:
        """Tracker changes (kind, key, current) in; what they touched out."""
        for change in changes:
            if change.kind == "services":
                self.service_changed(change.key, change.current)
            elif change.kind == "endpointslices":
                self.slice_changed(change.key, change.current)
            else:
                self.node_changed(change.key, change.current)
        return self.take_delta()

    def service_changed(self, key: str, obj: Mapping | None) -> None:
        if obj is None:
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self._refresh(key)

    def slice_changed(self, key: str, obj: Mapping | None) -> None:
        for owner in self._slice_moved(key, obj):
            self._refresh(owner)

    def node_changed(self, name: str, obj: Mapping | None) -> None:
        cidrs = pod_cidrs(obj)[0] if obj is not None else ()
        if self.node_cidrs.get(name, ()) != cidrs:
            if cidrs:
                self.node_cidrs[name] = cidrs
            else:
                self.node_cidrs.pop(name, None)
            self.view = replace(self.view, pod_cidrs=tuple(
                c for n in sorted(self.node_cidrs) for c in self.node_cidrs[n]))
            self._touched_sets.update(pod_set(f, self.view).name for f in self.flags.families)
        if name == self.view.name:
            addresses = node_addresses(obj) if obj is not None else {}
            if addresses != self.view.addresses:
                self.view = replace(self.view, addresses=addresses)
                self._snat_dirty = True
                for key in sorted(self.objects.keys() | self.fragments.keys()):
                    self._refresh(key)

    def _slice_moved(self, key: str, obj: Mapping | None) -> set[str]:
        """Files the slice under its Service; the Services whose endpoints it moved."""
        old, new = self.slice_owner.pop(key, None), service_of_slice(obj) if obj else None
        if old is not None:
            self.slices[old].pop(key, None)
            if not self.slices[old]:
                del self.slices[old]
        if new is not None:
            self.slice_owner[key] = new
            self.slices.setdefault(new, {})[key] = obj
        return {o for o in (old, new) if o is not None}

    def _refresh(self, key: str) -> None:
        """Rebuild one Service's fragment and swap it into the joined view."""
        obj, problems, fragment = self.objects.get(key), [], Fragment()
        self.refused.pop(key, None)
        if obj is not None:
            refused = controllers.BY_KEY[controllers.PROXY].refused_annotations(obj, "Service")
            if refused:
                self.refused[key] = refused
            try:
                slices = self.slices.get(key, {})
                ports = service_ports(obj, [slices[k] for k in sorted(slices)], self.hairpin_all)
                if self._check is not None:
                    ports = [self._check(sp, problems) for sp in ports]
                fragment = service_fragment(ports, self.view, self.flags)
            except _PROBLEMS as e:
                problems.append(f"Service {key}: {e}")
        if problems:
            self.problems[key] = problems
        else:
            self.problems.pop(key, None)
        self._swap(key, self.fragments.pop(key, Fragment()), fragment)
        if fragment != Fragment():
            self.fragments[key] = fragment

    def _swap(self, owner: str, old: Fragment, new: Fragment) -> None:
        if old == new:
            return
        for vs in old.services:
            key = ipvs_key(vs)
            self._key_was.setdefault(key, self.service(key))
            claims = self.claims.get(key, {})
            claims.pop(owner, None)
            if not claims:
                self.claims.pop(key, None)
        for vs in new.services:
            key = ipvs_key(vs)
            self._key_was.setdefault(key, self.service(key))
            self.claims.setdefault(key, {})[owner] = vs
        self._count(self.vips, old.vips, new.vips, self._vip_moved)
        self._count(self.members, old.members, new.members,
                    lambda m, present: self._touched_sets.add(m[0]))
        if old.hairpin or old.local or new.hairpin or new.local:
            self._snat_dirty = True
            self._snat.pop(owner, None)
            if new.hairpin or new.local:
                self._snat[owner] = new

    def _vip_moved(self, vip: str, present: bool) -> None:
        self._vip_was.setdefault(vip, not present)

    @staticmethod
    def _count(counter: Counter, old: frozenset, new: frozenset, moved) -> None:
        for item in old - new:
            counter[item] -= 1
            if counter[item] <= 0:
                del counter[item]
                moved(item, False)
        for item in new - old:
            counter[item] += 1
            if counter[item] == 1:
                moved(item, True)

    def _snat_rules(self, family: int) -> tuple[list[str], list[str]]:
        frags = [self._snat[k] for k in sorted(self._snat)]
        return ([r for f in frags for fam, r in f.hairpin if fam == family],
                [r for f in frags for fam, r in f.local if fam == family])

    def take_delta(self) -> ProxyDelta:
        delta = ProxyDelta()
        for key, was in self._key_was.items():
            now = self.service(key)
            if now != was:
                delta.services[key] = now
        for vip, was in self._vip_was.items():
            now = vip in self.vips
            if now and not was:
                delta.vips_added.add(vip)
            elif was and not now:
                delta.vips_removed.add(vip)
        if self._touched_sets:
            for family in self.flags.families:
                for s in family_sets(family, self.view, self._members_of(family)):
                    if s.name in self._touched_sets:
                        delta.sets[s.name] = s
        if self._snat_dirty:
            for family in self.flags.families:
                chain = snat_chain(family, *self._snat_rules(family), self.view, self.flags)
                if self.chains.get(family) != chain:
                    self.chains[family] = chain
                    delta.chains[family] = {chain.name: chain.rules}
        self._key_was, self._vip_was, self._touched_sets = {}, {}, set()
        self._snat_dirty = False
        return delta

    def _members_of(self, family: int) -> list[tuple[str, str]]:
        wanted = set(guard_set_names(family)) & self._touched_sets
        return [m for m in self.members if m[0] in wanted]
