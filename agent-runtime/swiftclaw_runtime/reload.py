"""Files the runtime re-reads while it runs, without a restart: the fleet document
(:mod:`.overrides`), the client API keys and the providers' Secret keys.

Every ``--reload-seconds`` (default 1) one task stats each file; nothing is done per
request. A stat follows symlinks, so a kubelet's update of a ConfigMap or Secret mount
(new files in a new ``..<timestamp>`` folder, then one rename of the ``..data`` symlink)
shows as a new inode; an in-place edit shows as a new mtime or size. A changed file is
read and parsed off the event loop, then put in force with one assignment:

- the fleet document: a bad file (not JSON, not the schema, too large) keeps the one in
  force; an older generation is ignored; a file that is gone means no overrides;
- the API keys: a bad file keeps the keys in force; a file that is gone means no keys
  (every request refused, as at startup): a key deleted from the Secret is refused from
  the next check after the kubelet's update;
- a provider's key file: a new key is sent from the next call on, and the breakers that
  refusals of the old key opened (401/403) let a probe through at once; an empty or
  missing file keeps the key in force (a Secret being replaced is no reason to call
  unsigned).

Each outcome is logged (why, never the contents) and counted in ``swiftclaw_reloads``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .auth import ApiKeyStore
from .config.fleet import FleetOverrides
from .credentials import provider_key_path, resolve_provider_key
from .overrides import BUDGET_STATES, MAX_FLEET_BYTES, FleetFileError, parse_fleet

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("swiftclaw.reload")

Stamp = tuple[int, int, int, int]


def stamp(path: Path) -> Stamp | None:
    """What identifies a file's content cheaply: device, inode, mtime and size of what the
    path resolves to (None: it does not exist)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class Watched:
    """One file and the stamp of the version last seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp = stamp(path)

    def changed(self) -> bool:
        now = stamp(self.path)
        if now == self.stamp:
            return False
        self.stamp = now
        return True


def read_fleet(path: Path) -> FleetOverrides | None:
    """The fleet document at ``path``; None when there is none (the optional mount is
    empty); :class:`FleetFileError` when it cannot be applied."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FLEET_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise FleetFileError(f"it cannot be read ({err.strerror})") from None
    return parse_fleet(raw)


class Reloader:
    """The periodic check of one runtime's files (see the module's docstring)."""

    def __init__(self, rt: Runtime, fleet_path: Path, api_keys_path: Path | None) -> None:
        self.rt = rt
        self.fleet = Watched(fleet_path)
        self.keys = Watched(api_keys_path) if api_keys_path is not None else None
        # the providers whose key comes from a mounted file (an environment variable set
        # at start cannot change while the process runs)
        self.provider_keys = {
            p.name: Watched(provider_key_path(p.name))
            for p in rt.policy.providers
            if not (p.api_key_env and os.environ.get(p.api_key_env))
        }
        self._exported: set[tuple[str, str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    def load_fleet(self) -> None:
        """The fleet document at start (a bad one is logged and no overrides apply)."""
        try:
            doc = read_fleet(self.fleet.path)
        except FleetFileError as err:
            log.warning("fleet file %s is not applied: %s", self.fleet.path, err)
            self.rt.metrics.reloads.labels("fleet", "invalid").inc()
        else:
            if doc is not None:
                self.rt.fleet.apply(doc)
                self._log_fleet()
        self.export_fleet()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        interval = self.rt.options.reload_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:  # a reload must never stop the checks that follow
                log.exception("re-reading the mounted files failed")

    async def check(self) -> None:
        """One round: each changed file re-read and put in force; the fleet's gauges
        brought up to date (exclusions end with time, not only with the file)."""
        if self.fleet.changed():
            await self._reload_fleet()
        if self.keys is not None and self.keys.changed():
            await self._reload_keys(self.keys.path)
        for name, watched in self.provider_keys.items():
            if watched.changed():
                self._reload_provider_key(name, watched.path)
        self.export_fleet()

    async def _reload_fleet(self) -> None:
        path = self.fleet.path
        reloads = self.rt.metrics.reloads
        try:
            doc = await asyncio.to_thread(read_fleet, path)
        except FleetFileError as err:
            applied = self.rt.fleet.doc
            log.warning(
                "fleet file %s is not applied: %s; generation %s stays in force",
                path,
                err,
                applied.generation if applied is not None else "(none)",
            )
            reloads.labels("fleet", "invalid").inc()
            return
        if doc is None:
            self.rt.fleet.apply(None)
            log.info("fleet file %s is gone: no fleet overrides apply", path)
            reloads.labels("fleet", "removed").inc()
            return
        if not self.rt.fleet.apply(doc):
            applied = self.rt.fleet.doc
            log.warning(
                "fleet file %s holds generation %d, older than the %d in force: ignored",
                path,
                doc.generation,
                applied.generation if applied is not None else 0,
            )
            reloads.labels("fleet", "stale").inc()
            return
        reloads.labels("fleet", "applied").inc()
        self._log_fleet()

    def _log_fleet(self) -> None:
        view = self.rt.fleet.view
        now = time.time()
        active = view.active(now)
        log.info(
            "fleet document generation %d applied: budget %s; %d models out of their tier%s%s",
            view.generation,
            view.budget(now),
            len(active),
            (": " + ", ".join(f"{e.tier}/{e.model} ({e.cause})" for e in active)) if active else "",
            f"; {view.ignored} entries name no tier or model of this agent" if view.ignored else "",
        )

    def export_fleet(self) -> None:
        """The gauges of what is applied now (expired exclusions dropped)."""
        m = self.rt.metrics
        view = self.rt.fleet.view
        now = time.time()
        m.fleet_generation.set(view.generation)
        m.fleet_budget_state.set(BUDGET_STATES.index(view.budget(now)))
        current = {(e.tier, e.model, str(e.cause)) for e in view.active(now)}
        for labels in self._exported - current:
            m.fleet_excluded.remove(*labels)
        for labels in current - self._exported:
            m.fleet_excluded.labels(*labels).set(1)
        self._exported = current

    async def _reload_keys(self, path: Path) -> None:
        rt = self.rt
        required = rt.keys.required
        try:
            store = await asyncio.to_thread(ApiKeyStore.from_file, path, required)
        except ValueError as err:
            log.warning("%s; the %d keys in force stay", err, len(rt.keys))
            rt.metrics.reloads.labels("api_keys", "invalid").inc()
            return
        rt.keys = store
        if self.keys is not None and self.keys.stamp is None:  # gone at this check
            log.warning("API keys file %s is gone: no keys, every request gets 401", path)
            rt.metrics.reloads.labels("api_keys", "removed").inc()
            return
        log.info("API keys file %s re-read: %d keys", path, len(store))
        rt.metrics.reloads.labels("api_keys", "applied").inc()

    def _reload_provider_key(self, name: str, path: Path) -> None:
        key = resolve_provider_key(self.rt.provider_specs[name])
        reloads = self.rt.metrics.reloads
        if key is None:
            log.warning("provider %s: key file %s is empty or gone; the key stays", name, path)
            reloads.labels("provider_key", "removed").inc()
            return
        self.rt.providers[name].use_key(key)
        self.rt.dispatcher.key_replaced(name)
        log.info("provider %s: key re-read from %s, used from the next call", name, path)
        reloads.labels("provider_key", "applied").inc()
