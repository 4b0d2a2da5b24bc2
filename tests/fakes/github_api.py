"""A fake GitHub REST API: a real HTTP server on loopback that records and validates every request.

Each request is matched to an operation of ``tests/data/github/openapi-subset.json`` (cut from
``@octokit/openapi``); its parameters and JSON body are validated against GitHub's schema (plus the
documented limits the schema leaves out, and no unknown properties), authentication is checked like
GitHub does (App JWT for ``/app``, installation tokens scoped to repositories), and anything wrong is
answered 4xx **and** appended to :attr:`FakeGitHub.errors`, which the tests assert is empty.
Faults (``fail``) script rate limits, 5xx — optionally *after* applying the write — and 401s.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.github_automations import AutomationsFake

SUBSET = Path(__file__).resolve().parent.parent / "data" / "github" / "openapi-subset.json"
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
# Limits GitHub enforces that the OpenAPI description does not state.
BODY_LIMIT = 65_536
OUTPUT_LIMIT = 65_535


def validate(schema: dict[str, Any] | None, value: Any, where: str = "$", strict: bool = True) -> list[str]:
    """JSON-schema errors for ``value`` (the subset GitHub's description uses); ``strict``: no unknown keys."""
    if not schema:
        return []
    errors: list[str] = []
    for key in ("anyOf", "oneOf"):
        if key in schema:
            passing = sum(1 for option in schema[key] if not validate(option, value, where, strict=False))
            if passing == 0 or (key == "oneOf" and passing > 1):
                errors.append(f"{where}: matches {passing} of the {key} alternatives")
    for option in schema.get("allOf", []):
        errors += validate(option, value, where, strict=False)
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if schema.get("nullable"):
            names = [*names, "null"]
        ok = any(
            isinstance(value, _TYPES[n]) and not (n in ("integer", "number") and isinstance(value, bool))
            for n in names
        )
        if not ok:
            return [*errors, f"{where}: expected {names}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}: shorter than {schema['minLength']}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            errors += validate(schema.get("items"), item, f"{where}[{i}]", strict)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: missing required {name!r}")
        for name, item in value.items():
            if name in props:
                errors += validate(props[name], item, f"{where}.{name}", strict)
            elif schema.get("additionalProperties") is False or (
                strict and props and "additionalProperties" not in schema
            ):
                errors.append(f"{where}: unknown property {name!r}")
    return errors


@dataclass
class Operation:
    """One operation of the subset, with a regex for its path."""

    op_id: str
    method: str
    template: str
    parameters: list[dict[str, Any]]
    body: dict[str, Any] | None
    body_required: bool
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        greedy = {"path", "ref"}
        pattern = re.sub(
            r"\{(\w+)\}",
            lambda m: f"(?P<{m.group(1)}>{'.+' if m.group(1) in greedy else '[^/]+'})",
            self.template,
        )
        self.regex = re.compile(f"^{pattern}$")


@dataclass
class Fault:
    """A scripted answer for requests matching ``method`` and ``path`` (a regex)."""

    method: str
    path: str
    status: int
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=lambda: {"message": "scripted failure"})
    # True: do the real work first, then answer the failure (the write landed, the answer was lost).
    apply: bool = False


@dataclass
class Recorded:
    """A request the fake received."""

    method: str
    path: str
    op: str
    body: Any
    status: int
    query: dict[str, str]


class FakeGitHub(AutomationsFake):
    """State and behaviour of the fake; :attr:`app` is the ASGI app to serve."""

    def __init__(
        self, app_id: int, public_key: str, remotes: Path | None = None, slug: str = "handoff"
    ) -> None:
        self.app_id = app_id
        self.public_key = public_key
        self.remotes = remotes
        self.bot = {"login": f"{slug}[bot]", "id": 9_000_001, "type": "Bot"}
        subset = json.loads(SUBSET.read_text())
        self.operations = [
            Operation(k, v["method"], v["path"], v["parameters"], v["requestBody"], v["bodyRequired"])
            for k, v in subset["operations"].items()
        ]
        self.requests: list[Recorded] = []
        self.errors: list[str] = []
        self.faults: list[Fault] = []
        self.ids = itertools.count(1000)
        self.installations: set[int] = set()
        self.tokens: dict[str, dict[str, Any]] = {}
        self.token_ttl = timedelta(hours=1)
        self.permissions: dict[tuple[str, str], str] = {}
        self.files: dict[tuple[str, str], str] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.checks: dict[int, dict[str, Any]] = {}
        self.pulls: dict[tuple[str, int], dict[str, Any]] = {}
        self.reactions: list[dict[str, Any]] = []
        self.hook_deliveries: list[dict[str, Any]] = []
        self.redelivered: list[int] = []
        self.manifest_codes: dict[str, dict[str, Any]] = {}
        # Where the App's webhooks go (GET /app/hook/config); `handoff doctor` compares it.
        self.hook_url = "https://handoff.example.com/github/webhooks"
        self._init_automations()
        self.app = FastAPI()
        self.app.add_api_route("/graphql", self.graphql, methods=["POST"], response_model=None)
        self.app.add_api_route("/_blobs/logs/{job_id}", self.blob, methods=["GET"], response_model=None)
        self.app.add_api_route(
            "/{full:path}",
            self._dispatch,
            methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            response_model=None,
        )

    # -- test helpers -----------------------------------------------------------------------------

    def fail(self, method: str, path: str, status: int, **kwargs: Any) -> Fault:
        """Script the next matching request(s) to fail."""
        fault = Fault(method, path, status, **kwargs)
        self.faults.append(fault)
        return fault

    def calls(self, op: str) -> list[Recorded]:
        """Requests recorded for operation ``op`` (e.g. ``issues/create-comment``)."""
        return [r for r in self.requests if r.op == op]

    def issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        """Comments on an issue or pull request, oldest first."""
        return [c for c in self.comments.values() if c["_target"] == (repo, number)]

    def revoke_tokens(self) -> None:
        """Make every token minted so far invalid (as if it expired early)."""
        for token in self.tokens.values():
            token["revoked"] = True

    # -- dispatch ---------------------------------------------------------------------------------

    async def _dispatch(self, request: Request, full: str) -> Response:
        path = "/" + full
        op, params = self._match(request.method, path)
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return self._error(request, path, "?", 400, f"{request.method} {path}: body is not JSON")
        if op is None:
            return self._error(request, path, "?", 404, f"unexpected request {request.method} {path}")
        problems = self._validate(op, params, dict(request.query_params), body)
        if problems:
            return self._error(request, path, op.op_id, 422, f"{op.op_id}: {'; '.join(problems)}", body)
        denied = self._authorize(request, op, params)
        if denied is not None:
            status, message = denied
            self._record(request, path, op.op_id, body, status)
            return JSONResponse({"message": message}, status_code=status)
        fault = next(
            (
                f
                for f in self.faults
                if f.times > 0 and f.method == request.method and re.search(f.path, path)
            ),
            None,
        )
        if fault is not None and not fault.apply:
            fault.times -= 1
            self._record(request, path, op.op_id, body, fault.status)
            return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
        handler = getattr(self, "op_" + re.sub(r"\W", "_", op.op_id))
        status, data = handler(params, dict(request.query_params), body or {}, request)
        if fault is not None:
            fault.times -= 1
            status, data = fault.status, fault.body
        self._record(request, path, op.op_id, body, status)
        headers = fault.headers if fault is not None else {}
        if isinstance(data, Response):
            return data
        if status == 204:
            return Response(status_code=204)
        return JSONResponse(data, status_code=status, headers=headers)

    def _match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str]]:
        for op in self.operations:
            if op.method == method:
                m = op.regex.match(path)
                if m:
                    return op, m.groupdict()
        return None, {}

    def _validate(self, op: Operation, params: dict[str, str], query: dict[str, str], body: Any) -> list[str]:
        problems: list[str] = []
        known = {p["name"] for p in op.parameters if p["in"] == "query"}
        for name in query:
            if name not in known:
                problems.append(f"unknown query parameter {name!r}")
        for p in op.parameters:
            source = params if p["in"] == "path" else query if p["in"] == "query" else None
            if source is None or p["name"] not in source:
                if p.get("required") and source is not None:
                    problems.append(f"missing {p['in']} parameter {p['name']!r}")
                continue
            value: Any = source[p["name"]]
            if p["schema"].get("type") == "integer":
                if not re.fullmatch(r"-?\d+", value):
                    problems.append(f"parameter {p['name']!r} is not an integer")
                    continue
                value = int(value)
            problems += validate(p["schema"], value, p["name"])
        if op.body is not None and body is None and op.body_required:
            problems.append("missing request body")
        if body is not None:
            problems += validate(op.body, body) if op.body is not None else ["unexpected request body"]
        if isinstance(body, dict):
            if len(str(body.get("body") or "")) > BODY_LIMIT:
                problems.append("body is too long (maximum is 65536 characters)")
            raw_output = body.get("output")
            output: dict[str, Any] = raw_output if isinstance(raw_output, dict) else {}
            for key in ("summary", "text"):
                if len(str(output.get(key) or "")) > OUTPUT_LIMIT:
                    problems.append(f"output.{key} is longer than 65535")
        return problems

    def _authorize(self, request: Request, op: Operation, params: dict[str, str]) -> tuple[int, str] | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if op.op_id == "apps/create-from-manifest":
            return None
        if op.template.startswith("/app") or op.op_id == "apps/get-repo-installation":
            if scheme.lower() != "bearer":
                return 401, "A JSON web token could not be decoded"
            try:
                claims = jwt.decode(
                    value, self.public_key, algorithms=["RS256"], options={"verify_iat": False}
                )
            except jwt.PyJWTError as exc:
                return 401, f"'Expiration time' claim ('exp') is invalid or bad JWT: {exc}"
            if str(claims.get("iss")) != str(self.app_id) or claims["exp"] - claims["iat"] > 660:
                return 401, "JWT iss or lifetime invalid"
            if "installation_id" in params and int(params["installation_id"]) not in self.installations:
                return 404, "Not Found"
            return None
        token = self.tokens.get(value) if scheme.lower() in ("token", "bearer") else None
        if token is None or token["revoked"] or token["expires_at"] < datetime.now(UTC):
            return 401, "Bad credentials"
        repo = f"{params.get('owner')}/{params.get('repo')}"
        if token["installation_id"] not in self.installations:
            return 401, "Bad credentials"
        if token["repositories"] is not None and params.get("repo") not in token["repositories"]:
            return 403, f"Resource not accessible by integration ({repo})"
        return None

    def _record(self, request: Request, path: str, op: str, body: Any, status: int) -> None:
        self.requests.append(Recorded(request.method, path, op, body, status, dict(request.query_params)))

    def _error(
        self, request: Request, path: str, op: str, status: int, message: str, body: Any = None
    ) -> Response:
        self.errors.append(message)
        self._record(request, path, op, body, status)
        return JSONResponse({"message": message}, status_code=status)

    # -- operations (name = "op_" + operationId with punctuation as "_") --------------------------

    def _now(self) -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def op_apps_create_installation_access_token(
        self, p: dict[str, str], q: Any, body: Any, r: Any
    ) -> tuple[int, Any]:
        value = f"ghs_{secrets.token_urlsafe(27)}"
        expires = datetime.now(UTC) + self.token_ttl
        self.tokens[value] = {
            "installation_id": int(p["installation_id"]),
            "repositories": body.get("repositories"),
            "permissions": body.get("permissions", {}),
            "expires_at": expires,
            "revoked": False,
        }
        data = {
            "token": value,
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "permissions": body.get("permissions", {}),
            "repository_selection": "selected",
        }
        return 201, data

    def op_apps_get_authenticated(self, p: Any, q: Any, body: Any, r: Any) -> tuple[int, Any]:
        return 200, {
            "id": self.app_id,
            "slug": str(self.bot["login"]).removesuffix("[bot]"),
            "name": "Handoff",
        }

    def op_apps_get_webhook_config_for_app(self, p: Any, q: Any, body: Any, r: Any) -> tuple[int, Any]:
        return 200, {"url": self.hook_url, "content_type": "json", "insecure_ssl": "0"}

    def op_apps_create_from_manifest(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        app = self.manifest_codes.pop(p["code"], None)
        return (201, app) if app is not None else (404, {"message": "Not Found"})

    def op_apps_list_webhook_deliveries(self, p: Any, q: Any, body: Any, r: Any) -> tuple[int, Any]:
        return 200, list(reversed(self.hook_deliveries))

    def op_apps_redeliver_webhook_delivery(
        self, p: dict[str, str], q: Any, body: Any, r: Any
    ) -> tuple[int, Any]:
        self.redelivered.append(int(p["delivery_id"]))
        return 202, {}

    def op_repos_get_collaborator_permission_level(
        self, p: dict[str, str], q: Any, body: Any, r: Any
    ) -> tuple[int, Any]:
        role = self.permissions.get((f"{p['owner']}/{p['repo']}", p["username"]), "none")
        permission = {"maintain": "write", "triage": "read"}.get(role, role)
        return 200, {"permission": permission, "role_name": role, "user": {"login": p["username"]}}

    def op_repos_get_content(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        text = self.files.get((f"{p['owner']}/{p['repo']}", p["path"]))
        if text is None:
            return 404, {"message": "Not Found"}
        content = base64.b64encode(text.encode()).decode()
        return 200, {
            "type": "file",
            "encoding": "base64",
            "content": content,
            "path": p["path"],
            "name": p["path"],
            "size": len(text),
            "sha": "0" * 40,
        }

    def op_git_get_ref(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        sha = "a" * 40
        if self.remotes is not None:
            bare = self.remotes / p["owner"] / f"{p['repo']}.git"
            out = subprocess.run(
                ["git", "--git-dir", str(bare), "rev-parse", p["ref"].removeprefix("heads/")],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                return 404, {"message": "Not Found"}
            sha = out.stdout.strip()
        return 200, {"ref": f"refs/{p['ref']}", "object": {"sha": sha, "type": "commit"}}

    def _comment(self, cid: int) -> dict[str, Any]:
        c = self.comments[cid]
        return {k: v for k, v in c.items() if not k.startswith("_")}

    def op_issues_create_comment(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        cid = next(self.ids)
        repo, number = f"{p['owner']}/{p['repo']}", int(p["issue_number"])
        self.comments[cid] = {
            "id": cid,
            "body": body["body"],
            "user": self.bot,
            "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{cid}",
            "created_at": self._now(),
            "updated_at": self._now(),
            "author_association": "NONE",
            "_target": (repo, number),
        }
        return 201, self._comment(cid)

    def op_issues_update_comment(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        cid = int(p["comment_id"])
        if cid not in self.comments:
            return 404, {"message": "Not Found"}
        self.comments[cid].update(body=body["body"], updated_at=self._now())
        return 200, self._comment(cid)

    def op_issues_list_comments(
        self, p: dict[str, str], q: dict[str, str], body: Any, r: Any
    ) -> tuple[int, Any]:
        items = self.issue_comments(f"{p['owner']}/{p['repo']}", int(p["issue_number"]))
        if "since" in q:
            since = q["since"].replace("Z", "+00:00")
            items = [c for c in items if c["updated_at"].replace("Z", "+00:00") >= since[:25]]
        per_page, page = int(q.get("per_page", 30)), int(q.get("page", 1))
        return 200, [self._comment(c["id"]) for c in items[(page - 1) * per_page : page * per_page]]

    def _react(self, kind: str, target: Any, content: str) -> tuple[int, Any]:
        for reaction in self.reactions:
            if reaction["kind"] == kind and reaction["target"] == target and reaction["content"] == content:
                return 200, reaction["data"]  # GitHub answers 200 for a reaction that exists
        data = {"id": next(self.ids), "content": content, "user": self.bot, "created_at": self._now()}
        self.reactions.append({"kind": kind, "target": target, "content": content, "data": data})
        return 201, data

    def op_reactions_create_for_issue_comment(
        self, p: dict[str, str], q: Any, body: Any, r: Any
    ) -> tuple[int, Any]:
        return self._react("issue_comment", int(p["comment_id"]), body["content"])

    def op_reactions_create_for_pull_request_review_comment(
        self, p: dict[str, str], q: Any, body: Any, r: Any
    ) -> tuple[int, Any]:
        return self._react("review_comment", int(p["comment_id"]), body["content"])

    def op_reactions_create_for_issue(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        return self._react("issue", (f"{p['owner']}/{p['repo']}", int(p["issue_number"])), body["content"])

    def op_checks_create(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        cid = next(self.ids)
        self.checks[cid] = {
            "id": cid,
            "app": {"id": self.app_id},
            "repo": f"{p['owner']}/{p['repo']}",
            "annotations": [],
            "html_url": f"https://github.com/{p['owner']}/{p['repo']}/runs/{cid}",
            **body,
        }
        self.checks[cid]["annotations"] = list((body.get("output") or {}).get("annotations", []))
        return 201, self.checks[cid]

    def op_checks_update(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        cid = int(p["check_run_id"])
        if cid not in self.checks:
            return 404, {"message": "Not Found"}
        check = self.checks[cid]
        check["annotations"] += list((body.get("output") or {}).get("annotations", []))
        check.update({k: v for k, v in body.items() if k != "output"})
        if "output" in body:
            check["output"] = {**check.get("output", {}), **body["output"]}
        return 200, check

    def op_checks_list_for_ref(
        self, p: dict[str, str], q: dict[str, str], body: Any, r: Any
    ) -> tuple[int, Any]:
        runs = [
            c
            for c in self.checks.values()
            if c.get("head_sha") == p["ref"] and c.get("name") == q.get("check_name", c.get("name"))
        ]
        return 200, {"total_count": len(runs), "check_runs": runs}

    def _pull(self, repo: str, number: int) -> dict[str, Any]:
        pr = self.pulls[(repo, number)]
        return {k: v for k, v in pr.items() if not k.startswith("_")}

    def add_pull(
        self,
        repo: str,
        number: int,
        head_ref: str,
        *,
        head_repo: str | None = None,
        base: str = "main",
        sha: str = "b" * 40,
    ) -> dict[str, Any]:
        """A pull request someone else opened (for comments on pull requests)."""
        self.pulls[(repo, number)] = {
            "id": next(self.ids),
            "number": number,
            "state": "open",
            "draft": False,
            "title": f"PR {number}",
            "body": "",
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "user": {"login": "alice", "type": "User"},
            "head": {"ref": head_ref, "sha": sha, "repo": {"full_name": head_repo or repo}},
            "base": {"ref": base, "sha": "c" * 40, "repo": {"full_name": repo}},
        }
        return self._pull(repo, number)

    def op_pulls_create(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        repo = f"{p['owner']}/{p['repo']}"
        if any(
            pr["head"]["ref"] == body["head"] and pr["state"] == "open"
            for (rp, _), pr in self.pulls.items()
            if rp == repo
        ):
            return 422, {
                "message": "Validation Failed",
                "errors": [{"message": f"A pull request already exists for {p['owner']}:{body['head']}."}],
            }
        number = max([n for (rp, n) in self.pulls if rp == repo] + [100]) + 1
        self.pulls[(repo, number)] = {
            "id": next(self.ids),
            "number": number,
            "state": "open",
            "draft": body.get("draft", False),
            "title": body.get("title", ""),
            "body": body.get("body", ""),
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "user": self.bot,
            "head": {"ref": body["head"], "sha": "d" * 40, "repo": {"full_name": repo}},
            "base": {"ref": body["base"], "sha": "c" * 40, "repo": {"full_name": repo}},
        }
        return 201, self._pull(repo, number)

    def op_pulls_update(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        key = (f"{p['owner']}/{p['repo']}", int(p["pull_number"]))
        if key not in self.pulls:
            return 404, {"message": "Not Found"}
        self.pulls[key].update(body)
        return 200, self._pull(*key)

    def op_pulls_get(self, p: dict[str, str], q: Any, body: Any, r: Any) -> tuple[int, Any]:
        key = (f"{p['owner']}/{p['repo']}", int(p["pull_number"]))
        return (200, self._pull(*key)) if key in self.pulls else (404, {"message": "Not Found"})

    def op_pulls_list(self, p: dict[str, str], q: dict[str, str], body: Any, r: Any) -> tuple[int, Any]:
        repo = f"{p['owner']}/{p['repo']}"
        head = q.get("head", "").partition(":")[2]
        state = q.get("state", "open")
        found = [
            self._pull(rp, n)
            for (rp, n), pr in self.pulls.items()
            if rp == repo
            and (not head or pr["head"]["ref"] == head)
            and (state == "all" or pr["state"] == state)
        ]
        return 200, found
