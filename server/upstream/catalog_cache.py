"""Each account's model catalog, read from Kimi's GetAvailableModels in the background, cached and refreshed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from common.config import Account
from server.core.model_catalog import FALLBACK, Catalog, CatalogModel, parse_catalog
from server.upstream.accounts import AccountPool
from server.upstream.errors import UpstreamError
from server.upstream.kimi.client import KimiClient, json_or_none

log = logging.getLogger("server.catalog")

CATALOG_PATH = "/apiv2/kimi.gateway.config.v1.ConfigService/GetAvailableModels"
TICK_SECONDS = 1.0        # how often the accounts are looked at (a due check; no call unless one is due)
RETRY_MAX_SECONDS = 60.0  # a failed read is tried again this soon (or at the refresh interval, if shorter)


@dataclass
class _Entry:
    """What one account's catalog is, and when to read it again."""

    catalog: Catalog | None   # None: never read successfully, the fallback stands in
    due: float                # time.monotonic() of the next read


class ModelCatalogs:
    """Per-account catalogs; the built-in fallback for an account whose catalog could never be read.

    A read that fails keeps the account's last good catalog (a blip should not change what a model id
    means); only an account never read successfully is served the fallback.
    """

    def __init__(self, kimi: KimiClient, pool: AccountPool, refresh_seconds: float,
                 reserved: Callable[[str], object] = lambda _: False) -> None:
        self.kimi, self.pool, self.refresh_seconds, self.reserved = kimi, pool, refresh_seconds, reserved
        self._entries: dict[str, _Entry] = {}
        self._listed: Catalog | None = None   # listed(), kept until a catalog changes (asked on every request)
        self._task: asyncio.Task | None = None

    def for_account(self, account: Account) -> Catalog:
        """This account's catalog, or the fallback while it has never been read."""
        entry = self._entries.get(account.name)
        return entry.catalog if entry is not None and entry.catalog is not None else FALLBACK

    def listed(self) -> Catalog:
        """Every model of every account read so far, with the first-read account's default; else the fallback."""
        if self._listed is None:
            catalogs = [e.catalog for e in self._entries.values() if e.catalog is not None]
            models: dict[str, CatalogModel] = {}
            for catalog in catalogs:
                for model in catalog.models:
                    models.setdefault(model.id, model)
            self._listed = Catalog(tuple(models.values()), catalogs[0].default) if catalogs else FALLBACK
        return self._listed

    def model_for(self, account: Account, model_id: str) -> CatalogModel:
        """What `model_id` ("" = the default) means for this account: its own entry, else another account's."""
        catalog = self.for_account(account)
        if not model_id:
            return catalog.default
        return catalog.get(model_id) or self.listed().get(model_id) or FALLBACK.get(model_id) or catalog.default

    def start(self) -> None:
        """Read the catalogs now and keep them fresh (in this process's event loop)."""
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop reading (at shutdown)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        """Look for due reads every tick, for as long as the server runs."""
        while True:
            try:
                await self.refresh_due()
            except Exception:   # noqa: BLE001 - the loop must outlive any one bad round; the error is logged
                log.exception("reading the model catalogs failed")
            await asyncio.sleep(TICK_SECONDS)

    async def refresh_due(self) -> None:
        """Read the catalog of every Connect account whose read is due and whose token is live."""
        accounts = self.pool.store.current().accounts
        names = {a.name for a in accounts}
        for gone in set(self._entries) - names:
            del self._entries[gone]
            self._listed = None
        now = time.monotonic()
        usable = {a.name for a in self.pool.usable()}
        due = [a for a in accounts if a.name in usable and self.pool.protocol_of(a) == "connect"
               and (a.name not in self._entries or self._entries[a.name].due <= now)]
        await asyncio.gather(*(self._read(a) for a in due))

    async def _read(self, account: Account) -> None:
        """Read one account's catalog; on failure keep what it had and try again soon."""
        entry = self._entries.setdefault(account.name, _Entry(None, 0.0))
        try:
            catalog = parse_catalog(await self._fetch(account), self.reserved)
        except (UpstreamError, ValueError) as exc:
            entry.due = time.monotonic() + min(self.refresh_seconds, RETRY_MAX_SECONDS)
            kept = "keeping its last catalog" if entry.catalog is not None else "using the built-in fallback models"
            log.warning("could not read the model catalog of account %r (%s); %s", account.name, exc, kept)
            return
        if entry.catalog is None or entry.catalog != catalog:
            log.info("model catalog of account %r: %s (default %s)", account.name, ", ".join(catalog.ids()),
                     catalog.default.id)
            self._listed = None
        entry.catalog, entry.due = catalog, time.monotonic() + self.refresh_seconds

    async def _fetch(self, account: Account) -> object:
        """The raw GetAvailableModels answer (unary Connect JSON, `{}` in, Bearer access token)."""
        headers = {**self.kimi.headers(account.access_token), "Connect-Protocol-Version": "1"}
        reply = await self.kimi.fetch(self.kimi.base_url + CATALOG_PATH, "POST", headers, orjson.dumps({}),
                                      "GetAvailableModels")
        data = json_or_none(reply.body)
        if reply.code != 200:
            code = data.get("code") if isinstance(data, dict) and isinstance(data.get("code"), str) else ""
            raise UpstreamError(f"GetAvailableModels answered HTTP {reply.code}" + (f" {code}" if code else ""))
        return data
