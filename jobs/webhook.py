"""Status webhooks: keep one status record per task up to date on an HTTP endpoint of your own.

Configured in ``handoff.yml``::

    webhooks:
      - url: https://ops.example.com/handoff/status
        secret: "..."          # optional: X-Handoff-Signature-256 = sha256=<hmac of body>
        min_interval_s: 1      # at most one write per task per interval (latest state wins)

The endpoint speaks a small resource protocol, so a retry never creates a second record:
``POST {url}`` with ``{"key", ...state}`` creates one and answers ``{"id": ...}``; ``PUT {url}/{id}``
replaces it; ``GET {url}?key=K`` answers the records with that key (used after a create whose answer
was lost — timeout or 5xx — before creating again). ``429``/``503`` with ``Retry-After`` are honoured.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from core.clock import utcnow
from core.models import EventType, Outbox, RunEvent, Task
from core.outbox import (
    Delivered,
    DeliveryContext,
    GiveUp,
    Operation,
    Operations,
    OutboxMessage,
    RateRule,
    RetryLater,
)
from core.ports import Integration
from core.services import Services
from core.settings import Settings

CHANNEL = "webhook"


class WebhookTarget(BaseModel):
    """One configured status webhook."""

    model_config = ConfigDict(extra="forbid")

    url: str
    secret: str | None = None
    min_interval_s: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=10.0, gt=0)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``x-ratelimit-reset``."""
    value = response.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
            except (TypeError, ValueError):
                return None
    reset = response.headers.get("x-ratelimit-reset")
    if reset and reset.isdigit():
        return max(0.0, int(reset) - utcnow().timestamp())
    return None


class StatusRecord(Operation):
    """The ``webhook`` channel's one operation: bring a task's status record up to date."""

    CHANNEL: ClassVar[str] = CHANNEL

    op: Literal["record"] = "record"
    task_id: str
    repo: str
    state: str
    reason: str | None = None
    event: str
    seq: int
    summary: str | None = None
    pr_url: str | None = None
    ts: str

    def body(self, key: str) -> dict[str, Any]:
        """What the endpoint receives: the record's key and fields (not the outbox's own)."""
        return {"key": key, **self.model_dump(mode="json", exclude={"op", "ack"})}


# Rows written before operations were typed carry no ``op``: the one operation is the default.
OPERATIONS: Operations[StatusRecord] = Operations(CHANNEL, StatusRecord)


class WebhookReporter:
    """Every status change (and result or question) of a task updates its status record."""

    def __init__(self, targets: list[WebhookTarget]) -> None:
        self.targets = targets

    def messages(self, task: Task, event: RunEvent) -> list[OutboxMessage]:
        """An upsert of the task's status record per target."""
        if event.type not in (EventType.status.value, EventType.result.value, EventType.question.value):
            return []
        # Only status events are the orchestrator's: a result or question comes from the agent,
        # so its data never supplies the state, the reason or a pull request link.
        status = event.data if event.type == EventType.status.value else {}
        record = StatusRecord(
            task_id=task.id,
            repo=task.repo,
            state=status.get("state", task.state),
            reason=status.get("reason"),
            event=event.type,
            seq=event.seq,
            summary=status.get("summary", task.summary),
            pr_url=status.get("pr_url", task.pr_url),
            ts=event.ts.isoformat(),
        )
        return [
            OutboxMessage(
                f"webhook:{i}:task:{task.id}", "upsert", record, f"webhook:{i}:{task.id}:{event.seq}"
            )
            for i in range(len(self.targets))
        ]


@dataclass
class WebhookNotifier:
    """Delivers status records with the create / look-up / update protocol above."""

    targets: list[WebhookTarget]
    client: httpx.AsyncClient
    channel: str = CHANNEL

    def _target(self, row: Outbox) -> WebhookTarget:
        index = int(row.key.split(":")[1])
        return self.targets[index]

    def rate_rules(self, row: Outbox) -> list[RateRule]:
        """At most one write per record per ``min_interval_s``."""
        return [RateRule(f"webhook:{row.key}", self._target(row).min_interval_s)]

    async def deliver(self, row: Outbox, ctx: DeliveryContext) -> Delivered:
        """Create the record once, update it afterwards."""
        target = self._target(row)
        body = OPERATIONS.parse(row).body(row.key)
        ref = await ctx.recall(row.key)
        if ref is None and row.attempts > 0:
            # An earlier create may have been applied before its answer was lost: look first.
            found = await self._send(target, "GET", target.url, params={"key": row.key})
            records = found.json() if found.content else []
            if isinstance(records, dict):
                records = [records]
            if records:
                ref = {"id": records[0]["id"]}
                await ctx.remember(row.key, ref)
        if ref is not None:
            response = await self._send(
                target, "PUT", f"{target.url.rstrip('/')}/{ref['id']}", body=body, missing_ok=True
            )
            if response.status_code != 404:
                return Delivered(ref)
            # The record was deleted on the other side: create it again.
        created = await self._send(target, "POST", target.url, body=body)
        new_ref = {"id": created.json()["id"]}
        await ctx.remember(row.key, new_ref)
        return Delivered(new_ref)

    async def _send(
        self,
        target: WebhookTarget,
        method: str,
        url: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response:
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "User-Agent": "Handoff"}
        if target.secret and content is not None:
            digest = hmac.new(target.secret.encode(), content, hashlib.sha256).hexdigest()
            headers["X-Handoff-Signature-256"] = f"sha256={digest}"
        try:
            response = await self.client.request(
                method, url, content=content, params=params, headers=headers, timeout=target.timeout_s
            )
        except httpx.TimeoutException as exc:
            raise RetryLater(f"{method} {url}: timed out") from exc
        except httpx.TransportError as exc:
            raise RetryLater(f"{method} {url}: {type(exc).__name__}") from exc
        status = response.status_code
        if status == 404 and missing_ok:
            return response
        if status in (429, 503) or status >= 500:
            raise RetryLater(f"{method} {url}: HTTP {status}", retry_after(response))
        if status >= 400:
            raise GiveUp(f"{method} {url}: HTTP {status}: {response.text[:200]}")
        return response


def build_integration(settings: Settings, services: Services) -> Integration | None:
    """The webhook integration when ``handoff.yml`` lists webhooks."""
    raw = services.config.webhooks
    if not raw:
        return None
    targets = [WebhookTarget.model_validate(t) for t in raw]
    client = httpx.AsyncClient(follow_redirects=False)
    return Integration(
        name="webhook",
        reporters=[WebhookReporter(targets)],
        notifiers=[WebhookNotifier(targets, client)],
        closers=[client],
    )
