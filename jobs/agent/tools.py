"""The built-in agent's tools, every one executed inside the run's sandbox container.

Nothing here touches the host's filesystem: even ``edit_file`` reads the file with ``cat`` in the
container and writes it back through stdin, because the checkout is the agent's and a symlink in
it must resolve inside the sandbox, never on the host. Each call is one or two ``docker exec``
(see :meth:`core.ports.Sandbox.exec`) with the profile's per-call timeout.

``finish`` and ``ask`` are offered here but carried out by the loop (they end the run).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from core.ports import ExecResult, Sandbox, SandboxHandle
from jobs.agent.conversation import ToolCall, ToolResult, ToolSpec

FINISH = "finish"
ASK = "ask"
REPORT = "report_findings"
MAX_READ_LINES = 2000
MAX_LIST = 1000
MAX_MATCHES = 200
_LINE_CUT = 2000


def _obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}


def _s(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _i(description: str) -> dict[str, Any]:
    return {"type": "integer", "description": description}


SPECS: list[ToolSpec] = [
    ToolSpec(
        "bash",
        "Run a shell command in /workspace (the repository) inside the sandbox and get its exit code "
        "and output (long output keeps its head and tail). No network unless the task allows it.",
        _obj(["command"], command=_s("the command line"), timeout_s=_i("seconds before it is killed")),
    ),
    ToolSpec(
        "read_file",
        f"Read a text file with line numbers; at most {MAX_READ_LINES} lines per call.",
        _obj(
            ["path"],
            path=_s("path, relative to /workspace"),
            start_line=_i("first line (1-based)"),
            end_line=_i("last line"),
        ),
    ),
    ToolSpec(
        "write_file",
        "Create or overwrite a file with the given content (parent directories are created).",
        _obj(["path", "content"], path=_s("path, relative to /workspace"), content=_s("the whole file")),
    ),
    ToolSpec(
        "edit_file",
        "Replace one exact occurrence of old_string with new_string in a file. Fails if old_string "
        "is not found or occurs more than once (then include more surrounding lines).",
        _obj(
            ["path", "old_string", "new_string"],
            path=_s("path, relative to /workspace"),
            old_string=_s("the exact text to replace"),
            new_string=_s("the replacement"),
        ),
    ),
    ToolSpec(
        "list_files",
        f"List the files under a directory (recursively, .git left out), at most {MAX_LIST}.",
        _obj([], path=_s("directory, default '.'")),
    ),
    ToolSpec(
        "search",
        "Search file contents for a regular expression; prints path:line:text for each match.",
        _obj(
            ["pattern"],
            pattern=_s("regular expression"),
            path=_s("directory or file, default '.'"),
            glob=_s("only files whose name matches this glob, e.g. '*.py'"),
        ),
    ),
    ToolSpec(
        FINISH,
        "Finish the task. Call this once the work is done (tests pass), with a summary of what you "
        "changed and why; it becomes the pull request description.",
        _obj(["summary"], summary=_s("what was done")),
    ),
    ToolSpec(
        ASK,
        "Ask the requester a question you cannot answer from the repository. The run pauses until "
        "they reply; use it only when you cannot reasonably decide yourself.",
        _obj(["question"], question=_s("the question")),
    ),
]
# Review mode: read and run, never write; the findings are the result.
REPORT_SPEC = ToolSpec(
    REPORT,
    "Report your review and end the run: every finding with its place on the pull request's head "
    "commit. Handoff checks them and posts those on changed lines as inline comments, the rest in "
    "the summary. Call it once, at the end.",
    _obj(
        ["findings", "summary"],
        summary=_s("the review in a few sentences"),
        findings={
            "type": "array",
            "description": "the problems found (empty when there are none)",
            "items": _obj(
                ["path", "line", "severity", "body"],
                path=_s("file path, relative to /workspace"),
                line=_i("line on the head commit (the last line of a range)"),
                start_line=_i("first line of a range"),
                severity={"type": "string", "enum": ["error", "warning", "info"]},
                title=_s("a short title"),
                body=_s("what is wrong and why"),
                suggestion=_s("replacement text for lines start_line..line (optional)"),
            ),
        },
    ),
)
REVIEW_SPECS: list[ToolSpec] = [
    *(spec for spec in SPECS if spec.name not in ("write_file", "edit_file", FINISH, ASK)),
    REPORT_SPEC,
]
_BY_NAME = {spec.name: spec for spec in [*SPECS, REPORT_SPEC]}
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "array": (list,),
}


def check_arguments(call: ToolCall, offered: list[ToolSpec] | None = None) -> dict[str, Any]:
    """The call's arguments, validated against its tool's schema; ``ValueError`` says what is wrong.

    ``offered``: the tools this run offers (a tool of another mode is unknown here)."""
    names = [s.name for s in offered] if offered is not None else list(_BY_NAME)
    spec = _BY_NAME.get(call.name) if call.name in names else None
    if spec is None:
        raise ValueError(f"unknown tool {call.name!r}; the tools are: {', '.join(names)}")
    args = call.parsed()
    props: dict[str, Any] = spec.parameters["properties"]
    missing = [name for name in spec.parameters["required"] if name not in args]
    if missing:
        raise ValueError(f"missing required argument(s): {', '.join(missing)}")
    for name, value in args.items():
        kind = props.get(name, {}).get("type")
        if kind in _TYPES and (isinstance(value, bool) or not isinstance(value, _TYPES[kind])):
            raise ValueError(f"argument {name!r} must be a {kind}, not {type(value).__name__}")
    return args


def head_tail(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping its head and its tail."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _path(path: str) -> str:
    """A path that no command will read as an option."""
    return f"./{path}" if path.startswith("-") else path


@dataclass
class ToolRun:
    """A tool call's result for the model, plus what the run's events record about it."""

    result: ToolResult
    exit_code: int | None = None
    duration_s: float = 0.0


@dataclass
class ToolBox:
    """Executes tool calls in one sandbox container."""

    sandbox: Sandbox
    handle: SandboxHandle
    timeout_s: float = 120.0
    output_chars: int = 30_000
    shell: str = "sh"
    has_rg: bool = False
    changed: set[str] = field(default_factory=set)
    commands: list[str] = field(default_factory=list)

    async def probe(self) -> None:
        """Find out which tools the image has (bash, ripgrep)."""
        found = await self.exec(["sh", "-c", "command -v bash; command -v rg; true"], 30)
        names = {line.rsplit("/", 1)[-1] for line in _decode(found.stdout).split()}
        self.shell = "bash" if "bash" in names else "sh"
        self.has_rg = "rg" in names

    async def exec(self, argv: list[str], timeout_s: float, stdin: bytes | None = None) -> ExecResult:
        """One command in the container."""
        return await self.sandbox.exec(self.handle, argv, timeout_s=timeout_s, stdin=stdin)

    async def run(self, call: ToolCall, args: dict[str, Any]) -> ToolRun:
        """Carry out ``call`` (whose ``args`` were checked); tool failures become error results."""
        started = time.monotonic()
        method = getattr(self, f"_{call.name}")
        text, is_error, code = await method(args)
        result = ToolResult(call.id, call.name, head_tail(text, self.output_chars), is_error)
        return ToolRun(result, code, time.monotonic() - started)

    async def run_command(self, command: str, timeout_s: float) -> ExecResult:
        """``command`` through the image's shell (setup and test commands use this too)."""
        return await self.exec([self.shell, "-c", command], timeout_s)

    # -- the tools: each returns (text for the model, is_error, exit code) ----------------------

    async def _bash(self, args: dict[str, Any]) -> tuple[str, bool, int | None]:
        timeout = min(float(args.get("timeout_s") or self.timeout_s), self.timeout_s)
        self.commands.append(str(args["command"]))
        r = await self.run_command(str(args["command"]), timeout)
        return format_exec(r, timeout), r.timed_out, r.exit_code

    async def _read_file(self, args: dict[str, Any]) -> tuple[str, bool, int | None]:
        start = max(int(args.get("start_line") or 1), 1)
        end = int(args.get("end_line") or start + MAX_READ_LINES - 1)
        end = min(max(end, start), start + MAX_READ_LINES - 1)
        mark = f"@@handoff-{uuid.uuid4().hex[:8]}"
        program = (
            f'NR>={start} && NR<={end} {{ printf "%6d\\t%s\\n", NR, substr($0, 1, {_LINE_CUT}) }} '
            f'END {{ printf "{mark} %d\\n", NR }}'
        )
        r = await self.exec(["awk", program, _path(args["path"])], self.timeout_s)
        out = _decode(r.stdout)
        body, _, tail = out.rpartition(f"{mark} ")
        if r.exit_code != 0 or not tail.strip().isdigit():
            return (
                f"cannot read {args['path']}: {_decode(r.stderr).strip() or out.strip()}",
                True,
                r.exit_code,
            )
        total = int(tail.strip())
        if total == 0:
            return f"[{args['path']} is empty]", False, 0
        if start > total:
            return f"[{args['path']} has only {total} lines]", True, 0
        shown = f"[{args['path']}: lines {start}-{min(end, total)} of {total}]"
        return f"{shown}\n{body}", False, 0

    async def _write_file(self, args: dict[str, Any]) -> tuple[str, bool, int | None]:
        data = str(args["content"]).encode("utf-8")
        r = await self._write(str(args["path"]), data)
        if r.exit_code != 0:
            return f"cannot write {args['path']}: {_decode(r.stderr).strip()}", True, r.exit_code
        self.changed.add(str(args["path"]))
        return f"wrote {len(data)} bytes to {args['path']}", False, 0

    async def _write(self, path: str, data: bytes) -> ExecResult:
        script = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'
        return await self.exec(["sh", "-c", script, "write_file", _path(path)], self.timeout_s, stdin=data)

    async def _edit_file(self, args: dict[str, Any]) -> tuple[str, bool, int | None]:
        path, old, new = str(args["path"]), str(args["old_string"]), str(args["new_string"])
        if not old:
            return "old_string is empty; use write_file to create or overwrite a file", True, None
        r = await self.exec(["cat", _path(path)], self.timeout_s)
        if r.exit_code != 0:
            return f"cannot read {path}: {_decode(r.stderr).strip()}", True, r.exit_code
        if r.truncated:
            return f"{path} is too large to edit with edit_file; use bash (sed, a script)", True, None
        try:
            text = r.stdout.decode("utf-8")
        except UnicodeDecodeError:
            return f"{path} is not UTF-8 text", True, None
        count = text.count(old)
        if count == 0:
            return f"old_string was not found in {path} (it must match exactly, whitespace included)", True, 0
        if count > 1:
            return (
                f"old_string occurs {count} times in {path}; include more context to make it unique",
                True,
                0,
            )
        line = text[: text.index(old)].count("\n") + 1
        w = await self._write(path, text.replace(old, new, 1).encode("utf-8"))
        if w.exit_code != 0:
            return f"cannot write {path}: {_decode(w.stderr).strip()}", True, w.exit_code
        self.changed.add(path)
        return f"edited {path} at line {line}", False, 0

    async def _list_files(self, args: dict[str, Any]) -> tuple[str, bool, int | None]:
        path = _path(str(args.get("path") or "."))
        if self.has_rg:
            argv = ["rg", "--files", "--hidden", "-g", "!.git", path]
        else:
            argv = ["find", path, "-name", ".git", "-prune", "-o", "-type", "f", "-print"]
        r = await self.exec(argv, self.timeout_s)
        names = sorted(n.removeprefix("./") for n in _decode(r.stdout).splitlines() if n)
        if r.exit_code not in (0, 1) and not names:
            return f"cannot list {path}: {_decode(r.stderr).strip()}", True, r.exit_code
        more = f"\n[... and {len(names) - MAX_LIST} more]" if len(names) > MAX_LIST else ""
        return ("\n".join(names[:MAX_LIST]) or "(no files)") + more, False, r.exit_code

    async def _search(self, args: dict[str, Any]) -> tuple[str, bool, int | None]:
        path, pattern = _path(str(args.get("path") or ".")), str(args["pattern"])
        glob = args.get("glob")
        if self.has_rg:
            argv = ["rg", "-n", "--no-heading", "--color", "never", "--hidden", "-g", "!.git"]
            argv += ["-g", str(glob)] if glob else []
            argv += ["-e", pattern, path]
        else:
            argv = ["find", path, "-name", ".git", "-prune", "-o", "-type", "f"]
            argv += ["-name", str(glob)] if glob else []
            argv += ["-exec", "grep", "-nHE", "-e", pattern, "{}", "+"]
        r = await self.exec(argv, self.timeout_s)
        lines = [line.removeprefix("./")[:500] for line in _decode(r.stdout).splitlines()]
        errors = _decode(r.stderr).strip()
        if not lines:
            return (f"error: {errors}", True, r.exit_code) if errors else ("no matches", False, r.exit_code)
        more = f"\n[... {len(lines) - MAX_MATCHES} more matches]" if len(lines) > MAX_MATCHES else ""
        return "\n".join(lines[:MAX_MATCHES]) + more, False, r.exit_code


def format_exec(r: ExecResult, timeout_s: float) -> str:
    """A command's outcome as the model reads it: status line, stdout, then stderr."""
    if r.timed_out:
        parts = [f"[timed out after {timeout_s:g} s: the command and its children were killed]"]
    else:
        parts = [f"[exit code {r.exit_code}]"]
    if r.stdout:
        parts.append(_decode(r.stdout).rstrip("\n"))
    if r.stderr:
        parts.append("[stderr]\n" + _decode(r.stderr).rstrip("\n"))
    return "\n".join(parts)
