"""``do: fix-ci``: collect what failed, hand it to the agent with the original task, stop in time.

What failed comes from GitHub, never from the checkout: a workflow run's failed jobs and their
failed steps (``GET .../actions/runs/{id}/jobs``), each job's log (``.../actions/jobs/{id}/logs``,
a redirect to a short-lived download) trimmed to the failing steps' lines; a check suite's failed
check runs with their output and annotations. All of it is untrusted (the pull request's code
printed it) and reaches the agent fenced.

On a Handoff pull request (head ``handoff/<task>`` in the repository itself) the failure becomes a
follow-up of that task, so the fix is pushed to the same branch; on another pull request a rule
allows, a task on top of it (its draft pull request targets that branch). Per pull request and
rule, at most ``max_attempts`` fixes are tried, and a failure identical to the last one tried (the
same failing jobs, steps and error lines, numbers aside) stops it too; both are said on the PR.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from core.automations.template import fence
from core.errors import NotFound
from core.links import FollowUpContext, TaskLinks
from core.models import Task
from core.outbox import OutboxMessage
from github_app.automations.decision import Decision, EventContext
from github_app.automations.firing import Firer
from github_app.operations import Comment

FAILED = frozenset({"failure", "timed_out", "startup_failure"})
MAX_JOBS = 5
MAX_LOG_BYTES = 512 * 1024
LINES_PER_STEP = 120
MAX_REPORT = 20_000
_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z ?")
_ERROR = re.compile(r"##\[error\]|\berror\b|\bfailed\b|Traceback", re.IGNORECASE)


@dataclass
class Failure:
    """What failed, for the agent and for the pull request."""

    sections: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """The same failing jobs, steps and error lines (numbers aside) give the same fingerprint."""
        material = "\n".join(sorted(set(self.names)) + sorted(set(self.signals)))
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def report(self) -> str:
        """The failure report for the agent, bounded and fenced as untrusted."""
        text = "\n\n".join(self.sections) or "(GitHub reported no details of the failure.)"
        if len(text) > MAX_REPORT:
            text = text[: MAX_REPORT // 4] + "\n[... cut ...]\n" + text[-(MAX_REPORT * 3 // 4) :]
        return fence(text, "ci")

    def headline(self) -> str:
        """The failing checks in one line (for the comment on the pull request)."""
        shown = ", ".join(f"`{n}`" for n in self.names[:6]) or "the checks"
        return shown + (f" and {len(self.names) - 6} more" if len(self.names) > 6 else "")


def normalise(line: str) -> str:
    """An error line without what changes from run to run (times, numbers, hashes)."""
    line = _TS.sub("", line)
    line = re.sub(r"\b[0-9a-f]{7,40}\b", "h", line)
    line = re.sub(r"\d+(\.\d+)?", "#", line)
    return re.sub(r"\s+", " ", line).strip().lower()[:300]


def _stamp(line: str) -> str:
    return line[:19] if _TS.match(line) else ""


def trim_log(log: str, steps: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The lines of ``log`` written during the failed ``steps`` (their last lines each), and the
    error lines among them; the log's tail when the steps cannot be told apart."""
    lines = log.splitlines()
    kept: list[str] = []
    for step in steps:
        start, end = str(step.get("started_at") or "")[:19], str(step.get("completed_at") or "")[:19]
        if not start:
            continue
        inside = [ln for ln in lines if start <= _stamp(ln) <= (end or "9999")]
        if inside:
            kept.append(f"--- step: {step.get('name', '?')} ---")
            kept.extend(inside[-LINES_PER_STEP:])
    if not kept:
        kept = lines[-LINES_PER_STEP:]
    text = [_TS.sub("", ln) for ln in kept]
    errors = [normalise(ln) for ln in text if _ERROR.search(ln) and not ln.startswith("--- step")]
    return "\n".join(text), errors[:50]


async def collect(firer: Firer, ctx: EventContext) -> Failure:
    """What failed in the workflow run or check suite of ``ctx``."""
    facts, api = ctx.facts, firer.engine.api
    inst, repo = facts.installation_id, facts.repo
    failure = Failure()
    if facts.workflow_run_id is not None:
        jobs = [
            j for j in await api.run_jobs(inst, repo, facts.workflow_run_id) if j.get("conclusion") in FAILED
        ]
        for job in jobs[:MAX_JOBS]:
            steps = [s for s in job.get("steps") or [] if s.get("conclusion") in FAILED]
            name = str(job.get("name") or job.get("id"))
            failure.names.extend([name, *(f"{name} > {s.get('name')}" for s in steps)])
            log = await api.job_log(inst, repo, int(job["id"]), MAX_LOG_BYTES)
            trimmed, errors = trim_log(log, steps)
            failure.signals.extend(errors)
            failure.sections.append(f"### Job `{name}` ({job.get('conclusion')})\n\n```\n{trimmed}\n```")
        return failure
    if facts.check_suite_id is not None:
        runs = [
            r for r in await api.suite_runs(inst, repo, facts.check_suite_id) if r.get("conclusion") in FAILED
        ]
        for run in runs[:MAX_JOBS]:
            failure.names.append(str(run.get("name") or run.get("id")))
            failure.sections.append(await _run_section(firer, ctx, run, failure))
    return failure


async def _run_section(firer: Firer, ctx: EventContext, run: dict[str, Any], failure: Failure) -> str:
    api, facts = firer.engine.api, ctx.facts
    output = run.get("output") or {}
    parts = [f"### Check `{run.get('name')}` ({run.get('conclusion')})"]
    for key, limit in (("title", 300), ("summary", 3000), ("text", 6000)):
        value = output.get(key)
        if isinstance(value, str) and value.strip():
            parts.append(value.strip()[:limit])
    if output.get("annotations_count"):
        notes = await api.annotations(facts.installation_id, facts.repo, int(run["id"]))
        lines = [
            f"{a.get('path')}:{a.get('start_line')}: {a.get('annotation_level')}: {a.get('message')}"[:500]
            for a in notes
            if a.get("annotation_level") in ("failure", "warning")
        ]
        failure.signals.extend(normalise(str(a.get("message") or "")) for a in notes)
        parts.append("Annotations:\n" + "\n".join(lines[:30]))
    app = (run.get("app") or {}).get("slug")
    if app == "github-actions":  # an Actions check run's id is its job's id
        log = await api.job_log(facts.installation_id, facts.repo, int(run["id"]), MAX_LOG_BYTES)
        trimmed, errors = trim_log(log, [])
        failure.signals.extend(errors)
        parts.append(f"Log (last lines):\n```\n{trimmed}\n```")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class FixTarget:
    """What a fix goes to: a Handoff task (a follow-up on its branch) or a pull request."""

    key: str
    task: Task | None = None
    number: int | None = None


async def target(firer: Firer, ctx: EventContext) -> FixTarget | str:
    """The task or pull request a CI failure is fixed on, or why there is none."""
    facts = ctx.facts
    if facts.head_ref.startswith("handoff/") and not facts.fork:
        task_id = facts.head_ref.removeprefix("handoff/")
        try:
            task = await firer.svc.tasks.get(task_id)
        except NotFound:
            return f"no Handoff task owns {facts.head_ref}"
        if task.repo.lower() != facts.repo.lower() or task.branch != facts.head_ref:
            return f"no Handoff task owns {facts.head_ref}"
        number = facts.number or TaskLinks.of(task).pr_number
        return FixTarget(key=f"task:{task.id}", task=task, number=number)
    if facts.number is not None and not facts.fork:
        return FixTarget(key=f"pr:{facts.number}", number=facts.number)
    # GitHub lists no pull request for a fork's: its branch name may also exist here, with other
    # code in it, so a failure that names no pull request of this repository is not fixed.
    return "the failure names no pull request of this repository"


async def fix_ci(firer: Firer, decision: Decision, ctx: EventContext) -> str:
    """Fire a fix-ci rule: see the module docstring."""
    engine, facts, rule = firer.engine, ctx.facts, decision.rule
    found = await target(firer, ctx)
    if isinstance(found, str):
        await engine.skip(rule, decision.source, facts, found, ctx=ctx)
        return f"skipped ({found})"
    prefix = f"{rule.name}:{facts.repo}:{found.key}:"
    key = prefix + facts.head_sha
    history = await engine.ledger.history(rule.name, facts.repo, prefix)
    if any(h.dedupe_key == key for h in history):
        reason = f"already fired for {key}"
        await engine.skip(rule, decision.source, facts, reason, ctx=ctx)
        return f"skipped ({reason})"
    if len(history) >= rule.max_attempts:
        reason = f"max_attempts reached: {len(history)} fixes tried"
        await _stop(firer, ctx, found, prefix, reason)
        await engine.skip(rule, decision.source, facts, reason, ctx=ctx)
        return f"skipped ({reason})"
    failure = await collect(firer, ctx)
    if history and history[-1].data.get("fingerprint") == failure.fingerprint:
        reason = f"the same failure as attempt {len(history)} ({failure.headline()})"
        await _stop(firer, ctx, found, prefix, reason)
        await engine.skip(rule, decision.source, facts, reason, ctx=ctx)
        return f"skipped ({reason})"
    attempt = len(history) + 1
    instructions = (
        f"The checks failed on {facts.head_sha[:12]} ({failure.headline()}). Find out why from the "
        "report below, fix the code (not the checks), and run the tests.\n\n" + failure.report()
    )

    async def act(d: Decision, c: EventContext) -> str:
        if found.task is not None:
            context = FollowUpContext.model_validate(
                {"delivery": f"automation:{d.key}", "automation": rule.name}
            )
            await firer.svc.tasks.follow_up(found.task.id, instructions, f"automation:{rule.name}", context)
            task_id = found.task.id
        else:
            task_id = await firer.start_work(d, c, extra=instructions)
        await _comment(
            firer,
            ctx,
            found,
            f"{prefix}{attempt}",
            f"CI failed on `{facts.head_sha[:7]}` ({failure.headline()}). Handoff is fixing it on "
            f"task `{task_id}`: attempt {attempt} of {rule.max_attempts}.",
        )
        return task_id

    return await firer.claim_and(
        Decision(rule, decision.source, key),
        ctx,
        act,
        fingerprint=failure.fingerprint,
        attempt=attempt,
        failing=failure.names[:20],
    )


async def _stop(firer: Firer, ctx: EventContext, found: FixTarget, prefix: str, reason: str) -> None:
    """Say once on the pull request that fixing CI stopped, and why."""
    await _comment(
        firer,
        ctx,
        found,
        f"{prefix}stopped",
        f"Handoff stopped fixing CI here: {reason}. Push a fix yourself, or ask with `/handoff <what to do>`.",
    )


async def _comment(firer: Firer, ctx: EventContext, found: FixTarget, key: str, text: str) -> None:
    if found.number is None:
        return
    facts = ctx.facts
    comment = Comment(installation_id=facts.installation_id, repo=facts.repo, number=found.number, body=text)
    outbox_key = f"github:automation:{key}"[:255]
    task_id = found.task.id if found.task is not None else None
    await firer.engine.send(
        [OutboxMessage(outbox_key, "append", comment, idempotency_key=outbox_key)], task_id
    )
