"""Watch-fed caches of the operator's children: what reconciles and status refreshes read.

One informer per kind and namespace scope (every namespace served, or one per namespace
listed), filtered by the managed-by label, lists once and then watches, so a reconcile
with nothing to change makes no API request. The cache stays right:

- a watch that ends (the server's timeout, a dropped connection) resumes from the last
  resourceVersion seen; one that is too old (410 Gone) lists again, and what the new list
  lacks is seen as deleted;
- what the operator writes goes in at once (:meth:`ChildCache.put` with the object the
  write returned), and an event older than what is held (resourceVersion order) never
  replaces it;
- a deleted child is gone from the cache when its DELETED event (or the next list) says so.

Objects are held as what the operator reads of them (:func:`slim`), as compressed compact
JSON (a fraction of the memory of parsed dicts: a thousand agents' children and pods are
some 18,000 objects); each read parses a fresh copy, which the caller may change.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .api import API_GROUP
from .kube import FIELD_MANAGER, Gone, Kube, KubeError
from .metrics import CACHE_OBJECTS, CACHE_RELISTS
from .resources.common import MANAGED_BY
from .resources.registry import Kind

log = logging.getLogger("swiftclaw.operator.cache")

MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
INSTANCE = "app.kubernetes.io/instance"
PAGE_SIZE = 500
RETRY_SECONDS = (1.0, 30.0)  # back-off after a failed list or watch: first, most
# kopf's copy of the spec it last handled (its diffbase, configured in handlers.startup).
KOPF_DIFFBASE_KEY = "last-handled-configuration"
# Copies of the object in its own annotations (kubectl's client-side apply, kopf's
# diffbase): as large as the spec (a system prompt of up to 128 KiB twice), never read.
UNREAD_ANNOTATIONS = frozenset(
    {"kubectl.kubernetes.io/last-applied-configuration", f"{API_GROUP}/{KOPF_DIFFBASE_KEY}"}
)
# What a managedFields entry keeps: who wrote the object, by which operation, to which
# subresource (reconcile.created_not_applied), not the field set.
MANAGER_KEYS = ("manager", "operation", "subresource")
# Parts of a kind the operator never reads: a pod's spec (its metadata and status are
# read: readiness, waiting reasons, its IP for the autopilot).
UNREAD_PARTS = {"Pod": ("spec",)}
COMPRESSION = 1  # zlib's fastest level: most of the saving (JSON repeats its keys)

Key = tuple[str, str]  # (namespace, name)
# Told of every change to a cached object: its kind, namespace and agent (instance label).
Listener = Callable[[str, str, str | None], None]


def newer(incoming: str, held: str) -> bool:
    """May an object at ``incoming`` resourceVersion replace one at ``held``? (They are
    etcd revisions, compared as numbers; anything else is taken as newer.)"""
    if incoming.isdigit() and held.isdigit():
        return int(incoming) >= int(held)
    return True


def matches(labels: Mapping[str, str], selector: Mapping[str, str] | None) -> bool:
    return not selector or all(labels.get(k) == v for k, v in selector.items())


@dataclass(slots=True)
class Entry:
    """One object: its version, its agent (the instance label, the index key), its JSON."""

    resource_version: str
    instance: str | None
    raw: bytes

    def load(self) -> dict[str, Any]:
        """A fresh copy of the object held."""
        return dict(orjson.loads(zlib.decompress(self.raw)))


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the cache holds of ``obj``: everything the reconcile, the status and the
    autopilot read of it. Dropped: the field sets of ``managedFields`` and the entries of
    other managers, the annotations that copy the object, the parts of :data:`UNREAD_PARTS`."""
    meta = dict(obj.get("metadata") or {})
    managers = [
        {k: m[k] for k in MANAGER_KEYS if k in m}
        for m in meta.pop("managedFields", None) or []
        if m.get("manager") == FIELD_MANAGER
    ]
    if managers:
        meta["managedFields"] = managers
    annotations = meta.get("annotations")
    if annotations and not UNREAD_ANNOTATIONS.isdisjoint(annotations):
        meta["annotations"] = {k: v for k, v in annotations.items() if k not in UNREAD_ANNOTATIONS}
    unread = UNREAD_PARTS.get(str(obj.get("kind")), ())
    return {**{k: v for k, v in obj.items() if k not in unread}, "metadata": meta}


def entry_of(obj: dict[str, Any]) -> Entry:
    """What the cache holds of ``obj``: :func:`slim`, compressed."""
    meta = obj.get("metadata") or {}
    instance = (meta.get("labels") or {}).get(INSTANCE)
    raw = zlib.compress(orjson.dumps(slim(obj)), COMPRESSION)
    return Entry(str(meta.get("resourceVersion", "")), instance, raw)


@dataclass
class Store:
    """The objects of one kind, by (namespace, name), indexed by their agent (instance label)."""

    kind: str
    objects: dict[Key, Entry] = field(default_factory=dict)
    by_instance: dict[Key, set[str]] = field(default_factory=dict)

    def put(self, key: Key, entry: Entry) -> bool:
        held = self.objects.get(key)
        if held is not None and not newer(entry.resource_version, held.resource_version):
            return False
        if held is not None:
            self._unindex(key, held)
        self.objects[key] = entry
        if entry.instance is not None:
            self.by_instance.setdefault((key[0], entry.instance), set()).add(key[1])
        return True

    def remove(self, key: Key, resource_version: str | None = None) -> Entry | None:
        """Drop ``key`` unless what is held is newer than the deletion seen."""
        held = self.objects.get(key)
        if held is None:
            return None
        if resource_version is not None and not newer(resource_version, held.resource_version):
            return None
        del self.objects[key]
        self._unindex(key, held)
        return held

    def _unindex(self, key: Key, entry: Entry) -> None:
        if entry.instance is None:
            return
        names = self.by_instance.get((key[0], entry.instance))
        if names is not None:
            names.discard(key[1])
            if not names:
                del self.by_instance[(key[0], entry.instance)]

    def keys(self, namespace: str | None, selector: Mapping[str, str] | None) -> Iterable[Key]:
        instance = (selector or {}).get(INSTANCE)
        if namespace is not None and instance is not None:
            return [(namespace, n) for n in self.by_instance.get((namespace, instance), ())]
        return [k for k in self.objects if namespace is None or k[0] == namespace]


class Informer:
    """List, then watch, one kind in one namespace scope (None: every namespace)."""

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        namespace: str | None,
        selector: str | None,
        store: Store,
        notify: Listener,
    ) -> None:
        self.kube, self.kind, self.namespace, self.selector = kube, kind, namespace, selector
        self.store, self.notify = store, notify
        self.synced = asyncio.Event()
        self.resource_version = ""

    def _in_scope(self, key: Key) -> bool:
        return self.namespace is None or key[0] == self.namespace

    async def run(self) -> None:
        """List (unless this informer ran before: it resumes its watch), then watch."""
        delay = RETRY_SECONDS[0]
        relist = not self.resource_version
        while True:
            try:
                if relist:
                    await self.relist()
                    relist = False
                self.synced.set()
                await self.watch()
                delay = RETRY_SECONDS[0]
            except Gone:
                CACHE_RELISTS.labels(self.kind.kind).inc()
                log.info("%s watch expired (410 Gone): listing again", self.kind.kind)
                relist = True
            except Exception as err:  # never left stale: whatever broke, list or watch again
                log.warning(
                    "%s %s failed (%s); again in %.0fs",
                    self.kind.kind,
                    "list" if relist else "watch",
                    err if isinstance(err, KubeError) else repr(err),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_SECONDS[1])

    async def relist(self) -> None:
        """A full, consistent list: the store's view of this scope becomes it (what is not
        in it was deleted, unless the operator wrote it after the list's snapshot)."""
        listed: dict[Key, Entry] = {}
        cont: str | None = None
        while True:
            page = await self.kube.list_page(
                self.kind.api_version,
                self.kind.kind,
                self.namespace,
                self.selector,
                PAGE_SIZE,
                cont,
            )
            for obj in page.items:
                # A list's items lack these; a watch event's and a write's object have them.
                obj.setdefault("kind", self.kind.kind)
                obj.setdefault("apiVersion", self.kind.api_version)
                meta = obj["metadata"]
                listed[(meta["namespace"], meta["name"])] = entry_of(obj)
            cont = page.next
            if not cont:
                break
        self.resource_version = page.resource_version
        for key in [k for k in self.store.objects if self._in_scope(k) and k not in listed]:
            gone = self.store.remove(key, page.resource_version)
            if gone is not None:
                self.notify(self.kind.kind, key[0], gone.instance)
        for key, entry in listed.items():
            if self.store.put(key, entry):
                self.notify(self.kind.kind, key[0], entry.instance)
        CACHE_OBJECTS.labels(self.kind.kind).set(len(self.store.objects))

    async def watch(self) -> None:
        events = self.kube.watch(
            self.kind.api_version,
            self.kind.kind,
            self.namespace,
            self.selector,
            self.resource_version,
        )
        async for event in events:
            obj = event.get("object") or {}
            meta = obj.get("metadata") or {}
            rv = str(meta.get("resourceVersion", ""))
            if rv:
                self.resource_version = rv
            kind = event.get("type")
            if kind == "BOOKMARK" or "name" not in meta:
                continue
            key = (meta["namespace"], meta["name"])
            if kind == "DELETED":
                gone = self.store.remove(key, rv)
                if gone is not None:
                    self.notify(self.kind.kind, key[0], gone.instance)
            else:  # ADDED, MODIFIED
                entry = entry_of(obj)
                if self.store.put(key, entry):
                    self.notify(self.kind.kind, key[0], entry.instance)
            CACHE_OBJECTS.labels(self.kind.kind).set(len(self.store.objects))


class ChildCache:
    """The operator's read side: ``get`` and ``list`` answer from memory, never the API.

    ``kinds`` are watched with the managed-by label selector; ``unlabelled`` kinds (the
    AgentDeployments themselves) without one. ``namespaces`` empty: every namespace."""

    def __init__(
        self,
        kube: Kube,
        kinds: Iterable[Kind],
        namespaces: Iterable[str] = (),
        unlabelled: Iterable[Kind] = (),
    ) -> None:
        self.kube = kube
        self.listeners: list[Listener] = []
        self.stores: dict[str, Store] = {}
        self.informers: list[Informer] = []
        self._tasks: list[asyncio.Task[None]] = []
        scopes: list[str | None] = list(namespaces) or [None]
        plan = [(k, MANAGED_SELECTOR) for k in kinds] + [(k, None) for k in unlabelled]
        for kind, selector in plan:
            store = self.stores.setdefault(kind.kind, Store(kind.kind))
            for ns in scopes:
                self.informers.append(Informer(kube, kind, ns, selector, store, self._notify))

    def _notify(self, kind: str, namespace: str, instance: str | None) -> None:
        for listener in self.listeners:
            listener(kind, namespace, instance)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(i.run()) for i in self.informers]

    async def wait_synced(self) -> None:
        """Until every informer has listed once (a reconcile before that would see its
        children missing)."""
        await asyncio.gather(*(i.synced.wait() for i in self.informers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        entry = self.stores[kind].objects.get((namespace, name))
        return None if entry is None else entry.load()

    def list(
        self, kind: str, namespace: str | None, selector: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` (None: all) whose labels match ``selector``."""
        store = self.stores[kind]
        out = []
        for key in store.keys(namespace, selector):
            entry = store.objects.get(key)
            if entry is None:
                continue
            obj = entry.load()
            if matches(obj["metadata"].get("labels") or {}, selector):
                out.append(obj)
        return sorted(out, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def put(self, obj: dict[str, Any]) -> None:
        """Hold what a write returned (kept unless the cache has a newer version already)."""
        store = self.stores.get(str(obj.get("kind")))
        if store is None:
            return
        meta = obj["metadata"]
        store.put((meta["namespace"], meta["name"]), entry_of(obj))

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """The operator deleted it."""
        store = self.stores.get(kind)
        if store is not None:
            store.remove((namespace, name))
