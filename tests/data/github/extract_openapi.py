"""Regenerate ``openapi-subset.json``: the operations Handoff calls, cut out of GitHub's OpenAPI description.

Usage (from the repository root)::

    cd /tmp && npm pack @octokit/openapi && tar xzf octokit-openapi-*.tgz
    uv run python tests/data/github/extract_openapi.py /tmp/package/generated/api.github.com.json

The fake GitHub server (``tests/fakes/github_api.py``) validates every request it receives against
the request-body schemas and parameters kept here, so a request GitHub would refuse fails the test.
``$ref`` s are inlined (the request bodies we use are not recursive); descriptions are dropped to
keep the file small.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERATIONS = [
    "apps/create-installation-access-token",
    "apps/create-from-manifest",
    "apps/list-webhook-deliveries",
    "apps/redeliver-webhook-delivery",
    "apps/get-authenticated",
    "apps/get-webhook-config-for-app",
    "repos/get-collaborator-permission-level",
    "repos/get-content",
    "git/get-ref",
    "checks/create",
    "checks/update",
    "checks/list-for-ref",
    "issues/create-comment",
    "issues/update-comment",
    "issues/list-comments",
    "reactions/create-for-issue-comment",
    "reactions/create-for-pull-request-review-comment",
    "reactions/create-for-issue",
    "pulls/create",
    "pulls/update",
    "pulls/list",
    "pulls/get",
    # automations
    "apps/get-repo-installation",
    "repos/get",
    "pulls/list-files",
    "pulls/create-review",
    "pulls/list-reviews",
    "pulls/list-review-comments",
    "pulls/update-review-comment",
    "checks/list-for-suite",
    "checks/list-annotations",
    "actions/list-jobs-for-workflow-run",
    "actions/download-job-logs-for-workflow-run",
]
_DROP = {"description", "examples", "example", "externalDocs", "x-github", "summary", "title"}


def _resolve(node: Any, spec: dict[str, Any], depth: int = 0, names: bool = False) -> Any:
    """Inline ``$ref`` s and drop documentation keys (``names``: keys are property names, keep all)."""
    if depth > 40:
        raise RecursionError("schema too deep (recursive $ref?)")
    if isinstance(node, dict):
        if "$ref" in node and not names:
            target: Any = spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return _resolve(target, spec, depth + 1)
        return {
            k: _resolve(v, spec, depth + 1, names=(k == "properties" and not names))
            for k, v in node.items()
            if names or k not in _DROP
        }
    if isinstance(node, list):
        return [_resolve(v, spec, depth + 1) for v in node]
    return node


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    """The kept operations by id: method, path, parameters and request-body schema."""
    found: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if not isinstance(op, dict) or op.get("operationId") not in OPERATIONS:
                continue
            params = [_resolve(p, spec) for p in [*shared, *op.get("parameters", [])]]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            found[op["operationId"]] = {
                "method": method.upper(),
                "path": path,
                "parameters": [
                    {
                        "name": p["name"],
                        "in": p["in"],
                        "required": p.get("required", False),
                        "schema": p["schema"],
                    }
                    for p in params
                ],
                "requestBody": _resolve(body, spec) if body is not None else None,
                "bodyRequired": bool(op.get("requestBody", {}).get("required")),
            }
    missing = set(OPERATIONS) - set(found)
    if missing:
        raise SystemExit(f"operations not found: {sorted(missing)}")
    return {"source": f"@octokit/openapi {spec['info']['version']}", "operations": found}


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(__file__).with_name("openapi-subset.json")
    out.write_text(json.dumps(extract(spec), indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
