"""Create/read/update/patch/delete with defaulting, validation, allocation and controllers."""
from __future__ import annotations

import copy
import datetime
import random
import uuid
from typing import Callable

from krsim.apiserver import errors as err
from krsim.apiserver.controllers import AllocationError, Controllers, ServiceAllocator
from krsim.apiserver.defaults import DEFAULTERS
from krsim.apiserver.kinds import NAMESPACES, RESOURCES, SERVICES, Resource
from krsim.apiserver.patch import apply_patch
from krsim.apiserver.selectors import (fields_match, labels_match, parse_field_selector,
                                        parse_label_selector)
from krsim.apiserver.store import Store
from krsim.apiserver.validation import validate_metadata, validate_spec

# generateName's suffix alphabet (no vowels, no look-alikes), as in the real server.
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_FIELDS = ("uid", "creationTimestamp", "resourceVersion", "deletionTimestamp",
                  "generation", "selfLink")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Registry:
    def __init__(self, store: Store, services: ServiceAllocator, controllers: Controllers,
                 clock: Callable[[], str] = utc_now, rng: random.Random | None = None):
        self.store = store
        self.services = services
        self.controllers = controllers
        self.clock = clock
        self.rng = rng or random.Random()

    # -- reads ---------------------------------------------------------------------------
    def get(self, res: Resource, namespace: str, name: str) -> dict:
        obj = self.store.get(res.plural, (namespace if res.namespaced else "", name))
        if obj is None:
            raise err.not_found(res, name)
        return obj

    def list(self, res: Resource, namespace: str | None, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict], int]:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, res.plural)
        items, rv = self.store.items(res.plural, namespace if res.namespaced else None)
        items = [o for o in items if labels_match(labels, o) and fields_match(fields, o)]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items, rv

    def objects(self, res: Resource, namespace: str | None) -> list[dict]:
        return self.store.items(res.plural, namespace)[0]

    # -- writes --------------------------------------------------------------------------
    def create(self, res: Resource, namespace: str, body: dict) -> dict:
        obj = self._prepare_body(res, namespace, body)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise err.bad_request("resourceVersion should not be set on objects to be created")
        for field in _SERVER_FIELDS:
            meta.pop(field, None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(self.rng.choice(_SUFFIX)
                                                          for _ in range(5))
        with self.store.lock:
            self._ensure_namespace(res, obj)
            DEFAULTERS.get(res.plural, lambda o: None)(obj)
            self._validate(res, obj)
            if self.store.get(res.plural, self._key(res, obj)) is not None:
                raise err.already_exists(res, meta["name"])
            if res is SERVICES:
                self._allocate(res, obj, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = self.clock()
            return self._commit(res, obj, None)

    def update(self, res: Resource, namespace: str, name: str, body: dict,
               subresource: str | None = None) -> dict:
        obj = self._prepare_body(res, namespace, body)
        if obj["metadata"].get("name", name) != name:
            raise err.bad_request(f"the name of the object ({obj['metadata']['name']}) does not "
                                  f"match the name on the URL ({name})")
        obj["metadata"]["name"] = name
        with self.store.lock:
            old = self.get(res, namespace, name)
            wanted_rv = obj["metadata"].get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise err.conflict(res, name)
            obj = self._merge_subresource(res, old, obj, subresource)
            for field in ("uid", "creationTimestamp", "generateName"):
                if field in old["metadata"]:
                    obj["metadata"][field] = old["metadata"][field]
            DEFAULTERS.get(res.plural, lambda o: None)(obj)
            self._validate(res, obj)
            if res is SERVICES:
                self._allocate(res, obj, old)
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if obj == old:
                return old        # a no-op update keeps the resourceVersion, as the real server
            return self._commit(res, obj, old)

    def patch(self, res: Resource, namespace: str, name: str, content_type: str, body,
              subresource: str | None = None) -> dict:
        with self.store.lock:
            old = self.get(res, namespace, name)
            patched = apply_patch(content_type, old, body)
            if not isinstance(patched, dict):
                raise err.bad_request("the patch did not produce an object")
            patched.setdefault("metadata", {})
            return self.update(res, namespace, name, patched, subresource)

    def delete(self, res: Resource, namespace: str, name: str) -> dict:
        with self.store.lock:
            old = self.get(res, namespace, name)
            if res is NAMESPACES:
                for other in RESOURCES:
                    if other.namespaced:
                        for obj in self.objects(other, name):
                            self.delete(other, name, obj["metadata"]["name"])
            if res is SERVICES:
                self.services.release(old.get("spec") or {})
            rv = self.store.next_rv()
            final = {**old, "metadata": {**old["metadata"], "resourceVersion": str(rv)}}
            self.store.remove(res.plural, self._key(res, old), final, rv)
            self.controllers.after_write(self, res, old, None)
            return final

    # -- for controllers (no allocation, no user-facing checks) ----------------------------
    def write_internal(self, res: Resource, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        with self.store.lock:
            old = self.store.get(res.plural, self._key(res, obj))
            if old is None:
                obj["metadata"]["uid"] = str(uuid.uuid4())
                obj["metadata"]["creationTimestamp"] = self.clock()
            DEFAULTERS.get(res.plural, lambda o: None)(obj)
            return self._commit(res, obj, old)

    def delete_internal(self, res: Resource, namespace: str, name: str) -> None:
        self.delete(res, namespace, name)

    # -- steps -----------------------------------------------------------------------------
    @staticmethod
    def _key(res: Resource, obj: dict) -> tuple[str, str]:
        meta = obj["metadata"]
        return (meta.get("namespace", "") if res.namespaced else "", meta["name"])

    @staticmethod
    def _prepare_body(res: Resource, namespace: str, body) -> dict:
        if not isinstance(body, dict):
            raise err.bad_request(f"the body of the request is not a {res.kind} object")
        if body.get("kind") not in (None, res.kind):
            raise err.bad_request(f"the kind of the object ({body['kind']}) does not match "
                                  f"the resource ({res.kind})")
        obj = {"kind": res.kind, "apiVersion": res.api_version,
               **{k: v for k, v in body.items() if k not in ("kind", "apiVersion")}}
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise err.bad_request("metadata must be an object")
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise err.bad_request("the namespace of the provided object does not match the "
                                      "namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def _ensure_namespace(self, res: Resource, obj: dict) -> None:
        if res.namespaced and self.store.get(NAMESPACES.plural,
                                             ("", obj["metadata"]["namespace"])) is None:
            raise err.not_found(NAMESPACES, obj["metadata"]["namespace"])

    @staticmethod
    def _validate(res: Resource, obj: dict) -> None:
        problems = validate_metadata(res.plural, obj["metadata"]) + validate_spec(res.plural, obj)
        if problems:
            raise err.invalid(res, obj["metadata"].get("name", ""), problems)

    @staticmethod
    def _merge_subresource(res: Resource, old: dict, new: dict, sub: str | None) -> dict:
        if not res.has_status:
            return new
        if sub == "status":
            # The status subresource changes status only (and may touch labels/annotations).
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status", {})
            return merged
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        return new

    def _allocate(self, res: Resource, obj: dict, old: dict | None) -> None:
        try:
            self.services.ensure_allocated(obj.setdefault("spec", {}),
                                           None if old is None else old.get("spec") or {})
        except AllocationError as failure:
            raise err.invalid(res, obj["metadata"]["name"], failure.errors) from None

    def _commit(self, res: Resource, obj: dict, old: dict | None) -> dict:
        rv = self.store.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        self.store.put(res.plural, self._key(res, obj), obj, rv)
        self.controllers.after_write(self, res, old, obj)
        return obj
