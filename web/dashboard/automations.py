"""The Automations page: the rules, what each did per repository (firings, skips, cost) and the
recent decisions with their reasons — only for the repositories the viewer may read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from core.automations.ledger import FIRED, SKIPPED
from core.automations.report import recent, rule_stats
from core.automations.rules import parse_rules
from core.inputs import SafeText
from core.services import Services
from web.dashboard.auth import dashboard

router = APIRouter(include_in_schema=False)


@router.get("/automations")
async def automations_page(
    request: Request,
    rule: Annotated[SafeText | None, Query(max_length=100)] = None,
    decision: Annotated[SafeText | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    """Rules, their activity per repository, and the newest firings and skips."""
    dash = dashboard(request)
    session = dash.codec.load(request)
    viewer = dash.require(request, session)
    services: Services = request.app.state.services
    scope = await dash.scope(services, viewer)
    rules = parse_rules(services.config.automations, "automations")
    stats = await rule_stats(services.sessions, scope)
    wanted = decision if decision in (FIRED, SKIPPED) else None
    decisions = await recent(services.sessions, repos=scope, rule=rule or None, decision=wanted, limit=200)
    totals: dict[str, dict[str, float]] = {r.name: {"fired": 0, "skipped": 0, "cost": 0.0} for r in rules}
    for s in stats:
        entry = totals.setdefault(s.rule, {"fired": 0, "skipped": 0, "cost": 0.0})
        entry["fired"] += s.fired
        entry["skipped"] += s.skipped
        entry["cost"] += s.cost_usd
    return dash.page(
        request,
        session,
        "automations.html",
        viewer=viewer,
        rules=rules,
        totals=totals,
        stats=stats,
        decisions=decisions,
        params={"rule": rule or "", "decision": wanted or ""},
        rule_names=sorted({r.name for r in rules} | {s.rule for s in stats}),
    )
