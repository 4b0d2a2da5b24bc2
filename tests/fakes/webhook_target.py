"""A status-webhook receiver on loopback that records everything and fails on demand.

It speaks the resource protocol of ``jobs/webhook.py`` (POST creates, GET ?key= looks up, PUT
updates) and can be told to answer the next requests with an error, a ``Retry-After``, or to apply a
write and then hang past the client's timeout (the "did my create happen?" case).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse


@dataclass
class Fault:
    """What to do to one upcoming request."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    apply: bool = False  # apply the write before answering badly
    hang_s: float = 0.0  # sleep this long before answering (after applying, if apply)
    method: str | None = None  # only requests with this method


@dataclass
class Seen:
    """One received request."""

    method: str
    path: str
    body: dict[str, Any] | None
    at: float
    status: int = 0


class WebhookTarget:
    """State and fault plan of the fake receiver."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self._next_id = 1
        self.app = self._build()

    def fail(self, *faults: Fault) -> None:
        """Queue faults for the next matching requests."""
        self.faults.extend(faults)

    def writes(self) -> list[Seen]:
        """Every POST/PUT that was applied or attempted."""
        return [r for r in self.requests if r.method in ("POST", "PUT")]

    def _take_fault(self, method: str) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.method in (None, method):
                return self.faults.pop(i)
        return None

    def _build(self) -> FastAPI:
        app = FastAPI()

        async def handle(request: Request, record_id: str | None = None) -> Response:
            body = await request.json() if request.method in ("POST", "PUT") else None
            seen = Seen(request.method, request.url.path, body, time.monotonic())
            self.requests.append(seen)
            fault = self._take_fault(request.method)
            if fault is not None and not fault.apply:
                if fault.hang_s:
                    await asyncio.sleep(fault.hang_s)
                seen.status = fault.status
                return JSONResponse({"error": "injected"}, status_code=fault.status, headers=fault.headers)
            response = self._apply(request.method, record_id, body, dict(request.query_params))
            if fault is not None:
                if fault.hang_s:
                    await asyncio.sleep(fault.hang_s)
                seen.status = fault.status
                return JSONResponse(
                    {"error": "injected after applying"}, status_code=fault.status, headers=fault.headers
                )
            seen.status = response.status_code
            return response

        @app.post("/status")
        async def create(request: Request) -> Response:
            return await handle(request)

        @app.get("/status")
        async def lookup(request: Request) -> Response:
            return await handle(request)

        @app.put("/status/{record_id}")
        async def replace(record_id: str, request: Request) -> Response:
            return await handle(request, record_id)

        return app

    def _apply(
        self, method: str, record_id: str | None, body: dict[str, Any] | None, query: dict[str, str]
    ) -> Response:
        if method == "GET":
            key = query.get("key")
            return JSONResponse(
                [{"id": rid, **rec} for rid, rec in self.records.items() if rec.get("key") == key]
            )
        if method == "POST":
            rid = str(self._next_id)
            self._next_id += 1
            self.records[rid] = dict(body or {})
            return JSONResponse({"id": rid}, status_code=201)
        if record_id not in self.records:
            return JSONResponse({"error": "not found"}, status_code=404)
        self.records[record_id] = dict(body or {})
        return JSONResponse({"id": record_id})
