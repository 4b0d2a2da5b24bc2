"""The body of one run: check out, run the agent in the sandbox, enforce budgets, push.

A command profile runs to its end in the sandbox, its stdout read as events (Handoff's JSON lines,
or Claude Code's / Codex's output through a translator). The sandbox's network is ``none``; a CLI
profile reaches its model through the run's model gateway (which holds the key, meters the tokens
and stops the run at its budget) and anything else only through the run's egress proxy
(:mod:`jobs.gateway`). A builtin profile runs Handoff's own agent
loop here, in the worker, with every tool executed in a long-lived sandbox container
(:mod:`jobs.agent.builtin`). Both end in the same outcomes, budgets and publishing; every event is
redacted before it is stored.

Returns an :class:`Outcome`; recording it (and retries, follow-ups, promotion) is the runner's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from core.budget import Budget
from core.config import Limits, Profile
from core.errors import SandboxError, SandboxUnavailable, WorkspaceError
from core.links import LinkChanges, TaskLinks
from core.models import EventType, Run, Task
from core.ports import SandboxSpec
from core.quoting import inert
from core.redact import Redactor
from core.states import TaskState
from core.usage import TokenUsage
from jobs.agent.ending import AgentEnd
from jobs.agent.prompt import cli_prompt
from jobs.agent.translate import translator_for
from jobs.gateway.session import RunGateway, for_profile
from jobs.hostgit import redact_url
from jobs.pump import EventPump
from jobs.review import finish_review, publishes
from jobs.services import WorkerServices
from jobs.workspace import GitWorkspace

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How a run ended, before it is written down."""

    state: TaskState
    reason: str | None = None
    retryable: bool = False
    summary: str | None = None
    exit_code: int | None = None
    branch: str | None = None
    head_sha: str | None = None
    files_changed: list[str] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    steps: int = 0
    model: str | None = None
    changes: LinkChanges = field(default_factory=LinkChanges)


class Execution:
    """Runs the agent of one run and publishes what it changed."""

    def __init__(self, wc: WorkerServices, task: Task, run: Run, cancel: asyncio.Event) -> None:
        self.wc = wc
        self.task = task
        self.run = run
        self.cancel = cancel
        self.budget: Budget = wc.config.budget.tightened(task.budget)
        self.budget_hit: str | None = None
        # Reported by the built-in agent or a CLI translator; recorded on the run.
        self.steps = 0
        self.model: str | None = None
        self.changes = LinkChanges()
        # Review mode: what the built-in agent reported (untrusted; jobs.review checks it).
        self.findings: Any = None
        self._background: set[asyncio.Task[None]] = set()

    async def execute(self) -> Outcome:
        """Do the run; never raises for agent, git or sandbox failures (they become outcomes)."""
        task, run = self.task, self.run
        _name, profile = self.wc.config.profile(task.agent)
        try:
            auth = await self.wc.git_credentials.auth_header(task) if self.wc.git_credentials else None
        except WorkspaceError as exc:  # e.g. the App was uninstalled from the repository
            return Outcome(TaskState.failed, reason=str(exc))
        workspace = GitWorkspace(
            TaskLinks.of(task).clone_source(task.repo),
            self.wc.settings.handoff_workspace_dir,
            task.id,
            run.id,
            base_ref=task.base_ref,
            sandbox_uid=_uid(profile.user),
            sandbox_gid=_gid(profile.user),
            auth_header=auth,
            history_depth=profile.history_depth,
            mirrors=self.wc.mirrors,
        )
        events: list[EventPump] = []  # the gateway reports into the pump, made just below
        gateway = for_profile(
            profile,
            self.wc.settings,
            run_id=run.id,
            base_dir=self.wc.settings.handoff_workspace_dir / ".gateway",
            uid=_uid(profile.user),
            gid=_gid(profile.user),
            budget=self.budget,
            price_of=self.wc.config.price,
            on_event=lambda kind, data: events[0].add(kind, data),
            on_exhausted=self._budget_used,
        )
        pump = EventPump(
            self.wc.sessions,
            self.wc.journal,
            task,
            run.id,
            on_usage=self._check_usage,
            redactor=self._redactor(auth, gateway.token),
            limits=self.wc.config.output,
            count_agent_usage=not gateway.meters,
        )
        events.append(pump)
        pump.start()
        outcome = Outcome(TaskState.failed, reason="run did not finish")
        try:
            outcome = await self._execute(workspace, pump, profile, gateway)
            return outcome
        finally:
            outcome.usage = pump.usage
            outcome.steps, outcome.model = self.steps, self.model
            outcome.changes = outcome.changes.merge(self.changes)
            with contextlib.suppress(Exception):
                await pump.close()
            for t in list(self._background):
                with contextlib.suppress(Exception):
                    await t
            await gateway.close()  # the token dies with the run
            await workspace.cleanup()

    async def _execute(
        self, workspace: GitWorkspace, pump: EventPump, profile: Any, gateway: RunGateway
    ) -> Outcome:
        task, run = self.task, self.run
        pump.add(EventType.progress.value, {"step": "checkout", "repo": task.repo})
        try:
            await workspace.prepare()
        except WorkspaceError as exc:
            pump.add(EventType.error.value, {"message": str(exc)})
            return Outcome(TaskState.failed, reason=str(exc))
        spec_file = workspace.spec_dir / "task.json"
        # A repository URL may carry credentials (https://user:token@host/...): never into the sandbox.
        spec_file.write_text(redact_url(json.dumps(task_spec(task, run))), encoding="utf-8")
        spec_file.chmod(0o444)
        limits = profile.limits
        budget_deadline = False
        if self.budget.wall_clock_s is not None and self.budget.wall_clock_s < limits.timeout_s:
            limits = limits.model_copy(update={"timeout_s": self.budget.wall_clock_s})
            budget_deadline = True
        try:
            access = await gateway.start()
        except (SandboxError, OSError) as exc:
            pump.add(EventType.error.value, {"message": f"model gateway / egress proxy: {exc}"})
            return Outcome(TaskState.failed, reason=f"could not start the run's gateway: {exc}")
        env = self._command_env(profile, pump) if profile.kind == "command" else _base_env(profile)
        spec = SandboxSpec(
            task_id=task.id,
            run_id=run.id,
            image=profile.image,
            command=list(profile.command),
            workspace=workspace.path,
            spec_file=spec_file,
            env={**env, **access.env},
            user=profile.user,
            limits=limits,
            mounts=access.mounts,
            wrapper=access.wrapper,
        )
        if profile.kind == "builtin":
            # Imported here: the model SDKs load only in workers that run the built-in agent.
            from jobs.agent.builtin import run_builtin

            end = await run_builtin(
                settings=self.wc.settings,
                config=self.wc.config,
                sandbox=self.wc.sandbox,
                profile=profile,
                task=task,
                run=run,
                budget=self.budget,
                spec=spec,
                pump=pump,
                cancel=self.cancel,
                branch=workspace.branch,
                budget_deadline=budget_deadline,
                budget_hit=lambda: self.budget_hit,
                on_start=self._container_started,
            )
        else:
            end = await self._run_command(spec, pump, profile, gateway, budget_deadline)
        return await self._conclude(end, workspace, pump, limits)

    async def _run_command(
        self, spec: SandboxSpec, pump: EventPump, profile: Profile, gateway: RunGateway, budget_deadline: bool
    ) -> AgentEnd:
        """Run a command profile to its end in the sandbox, its output read as events."""
        pump.add(EventType.progress.value, {"step": "agent", "image": profile.image})
        price = self.wc.config.price(self._model(profile))
        translator = translator_for(profile.output, price, metered=gateway.meters)

        def translated(line: str) -> None:
            assert translator is not None
            for type_, data in translator.feed(line):
                pump.add_agent(type_, data)

        on_line = pump.push if translator is None else translated
        steps: int | None = None
        model: str | None = None
        try:
            result = await self.wc.sandbox.run(spec, on_line, self.cancel, on_start=self._container_started)
            if translator is not None:
                for type_, data in translator.finish():
                    pump.add_agent(type_, data)
                steps, model = translator.steps, translator.model or self._model(profile)
            if gateway.meter is not None and gateway.meter.calls:
                steps = gateway.meter.calls  # model calls, as the gateway counted them
        except SandboxUnavailable as exc:
            pump.add(EventType.error.value, {"message": str(exc)})
            return AgentEnd("failed", reason=str(exc), retryable=True)
        except SandboxError as exc:
            pump.add(EventType.error.value, {"message": str(exc)})
            return AgentEnd("failed", reason=str(exc))
        end = AgentEnd("finished", exit_code=result.exit_code, oom=result.oom, steps=steps, model=model)
        if result.timed_out and budget_deadline:
            self.budget_hit = f"wall-clock budget of {spec.limits.timeout_s:g} s used"
        # A budget stops a command profile however it then ended (killed, or exiting on its own).
        if self.budget_hit is not None:
            end.status, end.reason = "budget", self.budget_hit
        elif result.cancelled:
            end.status = "cancelled"
        elif result.timed_out:
            end.status = "timeout"
        elif result.oom:
            end.status, end.reason = "failed", f"out of memory (limit {spec.limits.memory})"
        elif result.exit_code != 0:
            end.status, end.reason = "failed", f"agent exited with code {result.exit_code}"
        return end

    async def _conclude(
        self, end: AgentEnd, workspace: GitWorkspace, pump: EventPump, limits: Limits
    ) -> Outcome:
        """What the agent's end means for the task, and the work published where it counts."""
        if end.steps is not None:
            self.steps = end.steps
        if end.model is not None:
            self.model = end.model
        self.changes = self.changes.merge(end.changes)
        self.findings = end.findings
        if end.status == "budget":
            # Keep what was done so far on the branch.
            self.budget_hit = self.budget_hit or end.reason
            reason = f"budget exceeded: {self.budget_hit}"
            return await self._publish(workspace, pump, Outcome(TaskState.budget_exceeded, reason=reason))
        if end.status == "finished":
            return await self._publish(workspace, pump, Outcome(TaskState.succeeded, exit_code=end.exit_code))
        if end.status == "asked":
            # Push the work so far: the answer's run continues from the branch.
            return await self._publish(workspace, pump, Outcome(TaskState.waiting, reason=end.waiting_reason))
        if end.status == "cancelled":
            return Outcome(TaskState.cancelled, reason="cancelled", exit_code=end.exit_code)
        if end.status == "timeout":
            return timed_out(limits)
        return Outcome(TaskState.failed, reason=end.reason, retryable=end.retryable, exit_code=end.exit_code)

    def _model(self, profile: Profile) -> str | None:
        """The task's ``--model`` when the profile allows it, else the profile's model."""
        asked = TaskLinks.of(self.task).model
        if not asked:
            return profile.model
        # A profile behind the model gateway allows only its own models, listed or not.
        limited = profile.models is not None or profile.api_key_env is not None
        if limited and asked not in profile.gateway_models:
            return profile.model
        return asked

    def _command_env(self, profile: Profile, pump: EventPump) -> dict[str, str]:
        """A command profile's environment: its fixed values, the instructions and the model.

        Never a key: the run's gateway adds its token and base URL (:mod:`jobs.gateway`)."""
        env = _base_env(profile)
        instructions = self.run.instructions or self.task.instructions
        if profile.agent_prompt:
            instructions = cli_prompt(self.task, instructions, f"handoff/{self.task.id}")
        env["HANDOFF_INSTRUCTIONS"] = instructions
        model = self._model(profile)
        asked = TaskLinks.of(self.task).model
        if asked and asked != model:
            allowed = ", ".join(sorted(profile.gateway_models)) or "none"
            pump.add(
                EventType.error.value,
                {"message": f"model {asked!r} is not allowed here (allowed: {allowed}); using {model}"},
            )
        if model:
            env["HANDOFF_MODEL"] = model
        return env

    def _budget_used(self, reason: str) -> None:
        """The gateway found the budget used up (possibly mid-answer): stop the agent."""
        if self.budget_hit is None:
            self.budget_hit = reason
            log.info("run %s: %s; stopping the agent", self.run.id, reason)
        self.cancel.set()

    def _redactor(self, auth_header: str | None, gateway_token: str | None = None) -> Redactor:
        """Redaction of every stored event: the configured patterns and the secrets we hold."""
        literals = self.wc.settings.secret_values()
        if auth_header:
            literals.append(auth_header.split()[-1])
        if gateway_token:
            literals.append(gateway_token)
        return Redactor(self.wc.config.secret_patterns, literals)

    async def _publish(self, workspace: GitWorkspace, pump: EventPump, outcome: Outcome) -> Outcome:
        """Commit and push the agent's work; run the post-push hooks."""
        if not publishes(self.task):
            # Review mode: nothing is committed or pushed, whatever the agent changed.
            outcome.summary = await finish_review(self.wc.sessions, self.task, self.run, self.findings, pump)
            return outcome
        pump.add(EventType.progress.value, {"step": "push", "branch": workspace.branch})
        try:
            if self.wc.git_credentials is not None:
                # Runs can outlive an installation token (one hour): push with a fresh one.
                workspace.set_auth_header(await self.wc.git_credentials.auth_header(self.task))
            pushed = await workspace.publish(_commit_message(self.task, self.run, pump.summary))
        except WorkspaceError as exc:
            pump.add(EventType.error.value, {"message": str(exc)})
            return Outcome(TaskState.failed, reason=str(exc), exit_code=outcome.exit_code)
        if pushed.dropped:
            pump.add(
                EventType.log.value,
                {"text": "not committed: " + "; ".join(pushed.dropped[:50]), "dropped": pushed.dropped[:200]},
            )
        outcome.summary = pump.summary or (None if pushed.changed else "no changes")
        if pushed.changed:
            outcome.branch = pushed.branch
            outcome.head_sha = pushed.head_sha
            outcome.files_changed = pushed.files_changed
            for hook in self.wc.post_push:
                try:
                    pull = await hook.after_push(self.task, self.run, pushed, outcome.summary)
                    if pull is not None:
                        outcome.changes = outcome.changes.merge(LinkChanges(pull_request=pull))
                except Exception as exc:  # the branch is pushed; say what failed, keep the success
                    log.warning("post-push step failed for task %s: %s", self.task.id, exc)
                    pump.add(EventType.error.value, {"message": f"after push: {exc}"})
        else:
            pump.add(EventType.result.value, {"summary": "no changes", "changed": False})
        return outcome

    def _check_usage(self, tokens: int, cost: float) -> None:
        """Called by the pump as usage is reported: stop the agent once a budget is used."""
        if self.budget_hit is not None:
            return
        if self.budget.max_tokens is not None and tokens > self.budget.max_tokens:
            self.budget_hit = f"{tokens} tokens used (limit {self.budget.max_tokens})"
        elif self.budget.max_cost_usd is not None and cost > self.budget.max_cost_usd:
            self.budget_hit = f"${cost:.4f} spent (limit ${self.budget.max_cost_usd:.2f})"
        if self.budget_hit is not None:
            log.info("run %s: %s; stopping the agent", self.run.id, self.budget_hit)
            self.cancel.set()

    def _container_started(self, container_id: str) -> None:
        self.run.container_id = container_id
        task = asyncio.create_task(self._store_container(container_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _store_container(self, container_id: str) -> None:
        try:
            async with self.wc.sessions.begin() as session:
                await session.execute(
                    update(Run).where(col(Run.id) == self.run.id).values(container_id=container_id)
                )
        except Exception as exc:  # the label on the container still lets the reaper find it
            log.warning("could not record container of run %s: %s", self.run.id, exc)


def task_spec(task: Task, run: Run) -> dict[str, Any]:
    """The JSON written to ``/handoff/task.json`` for the agent."""
    links = TaskLinks.of(task)
    return {
        "task_id": task.id,
        "run_id": run.id,
        "attempt": run.attempt,
        "repo": task.repo,
        "base_ref": task.base_ref,
        "instructions": run.instructions or task.instructions,
        "original_instructions": task.instructions,
        "followups": [f.dump() for f in links.followups_done],
        "source": task.source,
        "requester": task.requester,
        "links": links.dump(),
        "budget": task.budget,
    }


def _base_env(profile: Profile) -> dict[str, str]:
    # Bytecode caches in the checkout would be committed with the agent's work, and a cache
    # written in the same second as an equal-size edit hides the edit from the next test run.
    return {"PYTHONDONTWRITEBYTECODE": "1", **profile.env}


def timed_out(limits: Limits) -> Outcome:
    """The outcome of a run stopped at the profile's deadline."""
    return Outcome(TaskState.timed_out, reason=f"deadline of {limits.timeout_s:g} s reached")


def _commit_message(task: Task, run: Run, summary: str | None) -> str:
    text = run.instructions or task.instructions
    title = (text.strip().splitlines() or ["changes"])[0][:68]
    body = f"\n\n{inert(summary)}" if summary else ""
    return f"handoff: {title}{body}\n\nHandoff-Task: {task.id}\nHandoff-Run: {run.id}"


def _uid(user: str) -> int | None:
    head = user.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def _gid(user: str) -> int | None:
    parts = user.split(":", 1)
    return int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else _uid(user)
