"""The redelivery reconciler: GitHub never redelivers by itself, so Handoff asks for what it missed.

Lists the App's recent hook deliveries (``GET /app/hook/deliveries``, App JWT), groups attempts by
GUID, and for every GUID that no attempt delivered successfully and that we have not handled (no
``Delivery`` row, or one still ``received`` because Redis was down) asks GitHub to deliver it again
(``POST /app/hook/deliveries/{id}/attempts``) — once per GUID, remembered in ``ExternalRef``. Run it
as a cron every few minutes; GitHub keeps deliveries for 3 days.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

from githubkit import GitHub
from sqlalchemy import select
from sqlmodel import col

from core.clock import utcnow
from core.db import Sessions
from core.models import Delivery, ExternalRef
from core.refs import put_ref
from github_app.client import GitHubClient
from github_app.errors import GitHubError
from github_app.webhooks import RECEIVED

log = logging.getLogger(__name__)
REDELIVERED = "github:redelivered:{guid}"


class Reconciler:
    """Finds failed deliveries that never reached Handoff and redelivers each once."""

    def __init__(
        self, client: GitHubClient, sessions: Sessions, window: timedelta = timedelta(days=3)
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.window = window

    async def _deliveries(self, max_pages: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        oldest = utcnow() - self.window
        for _ in range(max_pages):

            async def page(gh: GitHub[Any], cursor: str | None = cursor) -> Any:
                if cursor:
                    return await gh.rest.apps.async_list_webhook_deliveries(per_page=100, cursor=cursor)
                return await gh.rest.apps.async_list_webhook_deliveries(per_page=100)

            response = await self.client.as_app(page)
            batch = response.json()
            found.extend(batch)
            cursor = _next_cursor(response.headers.get("link", ""))
            if not cursor or not batch or _when(batch[-1]) < oldest:
                break
        return [d for d in found if _when(d) >= oldest]

    async def reconcile(self, max_pages: int = 10) -> list[str]:
        """Redeliver what is missing; return the GUIDs asked for."""
        attempts: dict[str, list[dict[str, Any]]] = {}
        for item in await self._deliveries(max_pages):
            attempts.setdefault(str(item.get("guid")), []).append(item)
        failed = {
            guid: max(items, key=lambda d: int(d.get("id", 0)))
            for guid, items in attempts.items()
            if not any(200 <= int(d.get("status_code") or 0) < 300 for d in items)
        }
        if not failed:
            return []
        async with self.sessions() as session:
            handled = await session.execute(
                select(col(Delivery.id)).where(
                    col(Delivery.id).in_(failed), col(Delivery.outcome) != RECEIVED
                )
            )
            done = set(handled.scalars())
            asked = await session.execute(
                select(col(ExternalRef.key)).where(
                    col(ExternalRef.key).in_([REDELIVERED.format(guid=g) for g in failed])
                )
            )
            done |= {key.rsplit(":", 1)[1] for key in asked.scalars()}
        redelivered: list[str] = []
        for guid, item in failed.items():
            if guid in done:
                continue
            delivery_id = int(item["id"])

            async def redeliver(gh: GitHub[Any], delivery_id: int = delivery_id) -> Any:
                return await gh.rest.apps.async_redeliver_webhook_delivery(delivery_id)

            try:
                await self.client.as_app(redeliver, write=True)
            except GitHubError as exc:
                log.warning("could not redeliver %s: %s", guid, exc)
                continue
            async with self.sessions.begin() as session:
                await put_ref(session, REDELIVERED.format(guid=guid), {"delivery_id": delivery_id})
            redelivered.append(guid)
        if redelivered:
            log.info("asked GitHub to redeliver %d deliveries", len(redelivered))
        return redelivered


def _when(item: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(item.get("delivered_at")).replace("Z", "+00:00"))
    except ValueError:
        return utcnow()


def _next_cursor(link: str) -> str | None:
    for part in link.split(","):
        if 'rel="next"' in part:
            url = part.split(";")[0].strip().strip("<>")
            values = parse_qs(urlparse(url).query).get("cursor")
            return values[0] if values else None
    return None
