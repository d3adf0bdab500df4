"""The tool loop: model -> tool call -> checked, approved, timed, cut result -> model ... -> final answer.

Rules (each one tested with a scripted backend in tests/test_tools_loop.py):

- arguments are validated against the tool's JSON Schema before anything runs;
- approval per tool: ``auto`` runs it, ``ask`` asks the :data:`Approver` (front
  ends ask a person; the default approver denies), ``deny`` refuses. A denied
  call ends the loop (``stop_reason: denied``);
- each call runs under a timeout; a result longer than the budget keeps its head
  and tail and says how much was cut;
- a tool error goes back to the model as text and stays in the trace; the same
  failing call twice ends the loop (``stop_reason: error``); a call identical to
  an earlier successful one is not run again (the model has its result);
- ``tool_choice: required`` or a tool's name forces the first step only;
- after ``max_steps`` calls, or when the loop ends for any reason above, one
  last call without tools answers in the spec's output type.

How the model is asked depends on the backend (:mod:`.native` for backends
with native tool calls, :mod:`.prompted` for every other one).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .. import schema as schemas
from ..backend import CutOff
from ..errors import PromptDSLError, quote
from ..plugin_code import plugin_code
from ..prompt import Prompt
from ..result import Response, Result
from .base import Approval, Step, StopReason, Tool, ToolCall, ToolError, ToolUse, result_text
from .check import CHOICES, MCP_PREFIX, mcp_command, tool_folder
from .registry import open_tool

if TYPE_CHECKING:
    from ..runner import Runner
    from ..spec import Spec

#: Characters of a tool result the model reads back; longer results keep head and tail.
DEFAULT_RESULT_BUDGET = 2000

#: Asked for each call whose approval is ``ask``: True runs it.
Approver = Callable[[Tool, ToolCall], bool]
#: Told about each call (``"call"``, before it runs) and each finished step (``"result"``).
ToolEvents = Callable[[str, Step], None]


def deny_all(tool: Tool, call: ToolCall) -> bool:
    """The default approver: nobody is there to ask, so ``ask`` means no."""
    return False


def approve_all(tool: Tool, call: ToolCall) -> bool:
    """``--yes``: every ``ask`` call is approved (``deny`` still refuses)."""
    return True


@dataclass
class ToolSettings:
    """How one runner uses tools beyond what the spec says (front ends and Python callers set these)."""

    extra: Sequence[Tool | ToolUse | str] = ()  # added for this run (-T, Runner(tools=...)); trusted
    approver: Approver = deny_all
    on_event: ToolEvents | None = None
    tool_choice: str | None = None  # overrides the spec's
    max_steps: int | None = None  # overrides the spec's
    result_budget: int = DEFAULT_RESULT_BUDGET
    approvals: dict[str, Approval] = field(default_factory=dict)  # per-tool override (e.g. "Always for this chat")


@dataclass
class ActiveTool:
    tool: Tool
    approval: Approval
    timeout: float
    direct: bool = False
    use: ToolUse | None = None  # the spec's entry (worked examples for the prompted path)


@dataclass
class Decision:
    """What the model did this step: call a tool, or answer (``text`` when the backend already wrote it)."""

    call: ToolCall | None = None
    text: str | None = None
    cut_off: CutOff | None = None  # a limit ended ``text`` (the native path says so)


class Stepped(NamedTuple):
    """How :meth:`ToolLoop.steps` ended: the trace, why, and the answer when the model already gave it."""

    steps: list[Step]
    reason: StopReason
    text: str | None = None  # the model's answer, or a direct tool's result (``direct``)
    direct: bool = False
    cut_off: CutOff | None = None  # a limit ended the model's ``text``


#: Whether a listed call to a tool is worth scoring (see :meth:`ToolLoop.acceptable`).
Accept = Callable[[str, Any], bool]


class Driver(Protocol):
    """One way of asking a backend for the next step (native tool calls or the prompted path)."""

    def decide(self, prompt: Prompt, steps: Sequence[Step], choice: str, accept: Accept | None = None) -> Decision:
        ...

    def final_prompt(self, prompt: Prompt, steps: Sequence[Step]) -> Prompt: ...


def cut(text: str, budget: int) -> str:
    """``text`` within ``budget`` characters: head and tail, with how much was cut in between."""
    if len(text) <= budget:
        return text
    marker = "\n[... {} characters cut ...]\n"
    room = max(budget - len(marker) - 8, 2)
    head, tail = room - room // 3, room // 3
    return text[:head] + marker.format(len(text) - head - tail) + text[len(text) - tail:]


def _key(call: ToolCall) -> str:
    return call.tool + json.dumps(call.arguments, sort_keys=True, default=str)


class ToolLoop:
    """Runs the loop for one runner; built by :func:`make_loop` when a spec (or caller) gives tools."""

    def __init__(self, runner: Runner, tools: Sequence[ActiveTool], settings: ToolSettings) -> None:
        from .native import NativeDriver, native_capable
        from .prompted import PromptedDriver

        self.runner = runner
        self.settings = settings
        self.tools = {t.tool.name: t for t in tools}
        spec = runner.spec
        self.choice = settings.tool_choice or spec.tool_choice
        self.max_steps = spec.max_steps if settings.max_steps is None else settings.max_steps
        if self.choice not in CHOICES and self.choice not in self.tools:
            raise ToolError(f"tool_choice '{self.choice}' names no tool in use ({', '.join(self.tools) or 'none'})")
        described = [t.tool for t in tools]
        native = native_capable(runner.backend) and spec.mode == "chat"
        examples = {t.tool.name: t.use for t in tools if t.use is not None and t.use.examples}
        self.driver: Driver = NativeDriver(runner, described) if native else PromptedDriver(runner, described, examples)
        self.path = "native" if native else "prompted"  # how the model is asked (benchmarks report it)

    def close(self) -> None:
        for t in self.tools.values():
            t.tool.release()

    # ------------------------------------------------------------------ the loop

    def respond(self, values: dict[str, Any], prompt: Prompt) -> Response:
        start = time.perf_counter()
        holder: dict[str, Any] = {}

        def chunks() -> Iterator[str]:
            steps, reason, text, direct, cut_off = self.steps(
                prompt, lambda tool, args: self.acceptable(values, tool, args))
            holder.update(steps=steps, reason=reason)
            if direct and (parsed := self._parse(values, str(text), any_method=True)) is not None:
                parsed.extra["answered_by"] = steps[-1].tool
                holder["result"] = parsed
                yield str(text)
                return
            if text is not None and not direct and (parsed := self._parse(values, text)) is not None:
                holder["result"] = replace(parsed, truncated=cut_off.reason if cut_off is not None else None)
                yield text
                return
            final = self.runner.answer(values, self.driver.final_prompt(prompt, steps))
            holder["final"] = final
            yield from final

        def finish(raw: str) -> Result:
            result: Result = holder["result"] if "result" in holder else holder["final"].result()
            result.steps = [s.to_dict() for s in holder["steps"]]
            result.stop_reason = str(holder["reason"])
            result.seconds = time.perf_counter() - start
            return result

        return Response(chunks(), finish)

    def _parse(self, values: dict[str, Any], text: str, any_method: bool = False) -> Result | None:
        """A native answer is the result when it parses and the spec's method is free generation
        (``any_method``: a direct tool's result, whatever the method)."""
        from ..spec import Method

        if self.runner.method is not Method.GENERATE and not any_method:
            return None
        try:
            return self.runner.answer_from_text(values, text)
        except PromptDSLError:
            return None

    def acceptable(self, values: dict[str, Any], tool: str, arguments: Any) -> bool:
        """Whether a listed call could end the run with a valid answer; False only when it surely cannot.

        Only for a ``direct`` tool (its result is the answer) that is read-only, ``cheap`` and runs
        without asking: running it costs nothing and changes nothing, so the prompted path tries each
        listed call and scores only those whose result fits the spec's output (a count cannot be
        -55 or 0.125). Any other tool: True, it is not run before the model chooses it.
        """
        active = self.tools.get(tool)
        if active is None or not active.direct or not active.tool.read_only:
            return True
        if self.settings.approvals.get(tool, active.approval) is not Approval.AUTO:
            return True
        if not active.tool.cheap:  # a remote API, say: run only when the model calls it
            return True
        if _argument_problem(active.tool, arguments):
            return False
        outcome = _run_with_timeout(active.tool, arguments, active.timeout)  # as execute runs it
        if not isinstance(outcome, str):  # the call fails: the model should not pick it
            return False
        return self._parse(values, cut(outcome, self.settings.result_budget), any_method=True) is not None

    def steps(self, prompt: Prompt, accept: Accept | None = None) -> Stepped:
        """Run tool steps until the model answers or a rule stops it."""
        steps: list[Step] = []
        failed: set[str] = set()
        succeeded: set[str] = set()
        if self.choice == "none" or not self.tools:
            return Stepped(steps, StopReason.ANSWER)
        while len(steps) < self.max_steps:
            forced = self.choice if not steps else "auto"
            decision = self.driver.decide(prompt, steps, forced, accept)
            if decision.call is None:
                return Stepped(steps, StopReason.ANSWER, decision.text, cut_off=decision.cut_off)
            key = _key(decision.call)
            if key in succeeded:
                return Stepped(steps, StopReason.ANSWER)
            step = self.execute(decision.call)
            steps.append(step)
            if step.approved is False:
                return Stepped(steps, StopReason.DENIED)
            if step.error is not None:
                if key in failed:
                    return Stepped(steps, StopReason.ERROR)
                failed.add(key)
            else:
                succeeded.add(key)
                if self.tools[step.tool].direct:
                    return Stepped(steps, StopReason.ANSWER, step.result, direct=True)
        return Stepped(steps, StopReason.MAX_STEPS)

    # ------------------------------------------------------------------ one call

    def execute(self, call: ToolCall) -> Step:
        """Check, approve, run (with a timeout) and cut one call; never raises for the tool's faults."""
        step = Step(call.tool, call.arguments, id=call.id)
        active = self.tools.get(call.tool)
        if active is None:
            step.error = f"unknown tool '{call.tool}'; the tools are: {', '.join(self.tools)}"
            return self._told("result", step)
        problem = _argument_problem(active.tool, call.arguments)
        if problem:
            step.error = f"bad arguments: {problem}"
            return self._told("result", step)
        self._told("call", step)
        approval = self.settings.approvals.get(call.tool, active.approval)
        if approval is Approval.ASK:
            try:
                step.approved = bool(self.settings.approver(active.tool, call))
            except PromptDSLError:
                raise
            except Exception as exc:  # an approver that breaks says no
                step.approved, step.error = False, f"approval failed: {type(exc).__name__}: {exc}"
        else:
            step.approved = approval is Approval.AUTO
        if not step.approved:
            step.error = step.error or "the user denied this call"
            return self._told("result", step)
        started = time.perf_counter()
        outcome = _run_with_timeout(active.tool, call.arguments, active.timeout)
        step.seconds = time.perf_counter() - started
        if isinstance(outcome, str):
            step.result = cut(outcome, self.settings.result_budget)
        else:
            step.error, step.exception = cut(outcome.message, self.settings.result_budget), outcome.exception
        return self._told("result", step)

    def _told(self, kind: str, step: Step) -> Step:
        if self.settings.on_event is not None:
            self.settings.on_event(kind, step)
        return step


class _Failed:
    def __init__(self, message: str, exception: BaseException | None = None) -> None:
        self.message = message
        self.exception = exception  # an unexpected one (not ToolFailure), for --debug's traceback


def _run_with_timeout(tool: Tool, arguments: dict[str, Any], timeout: float) -> str | _Failed:
    """The tool's text, or why it failed. A call past its timeout is abandoned (its thread is a daemon)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with plugin_code():  # what the tool prints is not the run's output
                box["out"] = result_text(tool.name, tool.call(dict(arguments)))
        except BaseException as exc:  # the tool's fault, whatever it is, goes back to the model
            box["err"] = exc

    thread = threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return _Failed(f"timed out after {timeout:g}s")
    if "err" in box:
        exc = box["err"]
        from .base import ToolFailure

        if isinstance(exc, ToolFailure):
            return _Failed(str(exc))
        return _Failed(f"{type(exc).__name__}: {exc}", exc)
    return str(box.get("out", ""))


def _argument_problem(tool: Tool, arguments: Any) -> str | None:
    if not isinstance(arguments, Mapping):
        return f"arguments must be a JSON object, not {type(arguments).__name__}"
    # The bounded validator: a model-written string against a plugin's or MCP server's pattern
    # (``^(a+)+$``) runs with a time limit, and a schema that loops is a problem, not a crash.
    try:
        errors = schemas.errors(tool.parameters, dict(arguments))
    except Exception as exc:  # an unusable schema from a plugin or server: the call cannot be checked
        return f"the tool's argument schema cannot be used: {type(exc).__name__}: {exc}"
    if not errors:
        return None
    err = errors[0]
    at = ".".join(str(p) for p in err.absolute_path)
    return str(err.message) + (f" (at '{at}')" if at else "")


def default_approval(tool: Tool) -> Approval:
    return Approval.AUTO if tool.read_only else Approval.ASK


def make_loop(runner: Runner, settings: ToolSettings | None) -> ToolLoop | None:
    """The loop for ``runner``, or None when neither the spec nor the caller gives tools."""
    spec = runner.spec
    settings = settings or ToolSettings()
    if not spec.tools and not settings.extra:
        return None
    # A spec that chose the server too would see whatever its tools read: they all ask first.
    floor = Approval.ASK if runner.backend.spec_chose_destination else Approval.AUTO
    active: list[ActiveTool] = []
    try:
        for i, use in enumerate(spec.tools):
            if use.name.startswith(MCP_PREFIX) and not _may_start(use, settings):
                raise ToolError(f"the spec starts the MCP server '{use.name[len(MCP_PREFIX):]}'; "
                                "approve it on a terminal or pass --yes")
            active += _open(use, tool_folder(spec, i), trusted=False, floor=floor)
        from_spec = len(active)
        for item in settings.extra:
            if isinstance(item, Tool):
                active.append(ActiveTool(item, default_approval(item), ToolUse(item.name).timeout))
            else:
                use = item if isinstance(item, ToolUse) else ToolUse(item)
                active += _open(use, Path.cwd(), trusted=True)
    except BaseException:
        for t in active:
            t.tool.release()
        raise
    names = [t.tool.name for t in active]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        for t in active:
            t.tool.release()
        raise ToolError(_duplicate_message(dupes, names[:from_spec], names[from_spec:]))
    return ToolLoop(runner, active, settings)


def check_added_tools(spec: Spec, added: Sequence[Tool | ToolUse | str]) -> None:
    """Tools added for a run (``-T``) whose names the spec's built-in or plugin tools already use:
    found from the names alone, so before a model loads (``make_loop`` checks the opened tools again)."""
    listed = [u.name for u in spec.tools if not u.name.startswith(MCP_PREFIX)]
    servers = {mcp_command(u.name) for u in spec.tools if u.name.startswith(MCP_PREFIX)}
    names = [t.name if isinstance(t, (Tool, ToolUse)) else t for t in added]
    for name in names:
        if name.startswith(MCP_PREFIX) and mcp_command(name) in servers:
            raise ToolError(f"the spec already starts the MCP server {quote(mcp_command(name))}; a tool added for "
                            "the run (-T) must be one the spec does not list, so leave it out")
    clash = sorted({n for n in names if n in listed})
    if clash:
        raise ToolError(_duplicate_message(clash, listed, names))


def _duplicate_message(dupes: list[str], spec_names: list[str], extra_names: list[str]) -> str:
    """Why two tools of one name are refused, in terms of where the user gave them."""
    added = [n for n in dupes if n in spec_names and n in extra_names]
    if added:  # the usual case: -T (or the caller's extra tools) repeats one the spec lists
        listed = ", ".join(f"'{n}'" for n in added)
        what = "tool" if len(added) == 1 else "tools"
        return (f"the spec already lists the {what} {listed}; a tool added for the run (-T) must be one "
                "the spec does not list, so leave it out, or remove it from the spec to give it your own settings")
    return f"tool names must be unique; given twice: {', '.join(dupes)}"


class _Server(Tool):
    """Stands for an MCP server a spec wants to start, so the approver can be asked about it."""

    description = "start a local MCP server process named by the spec"


def _may_start(use: ToolUse, settings: ToolSettings) -> bool:
    """A spec file is untrusted: starting the process it names needs the user's approval."""
    command = use.name[len(MCP_PREFIX):]
    server = _Server()
    server.name = use.name
    try:
        return bool(settings.approver(server, ToolCall("mcp-server", {"command": command})))
    except Exception:
        return False


_STRICTNESS = (Approval.AUTO, Approval.ASK, Approval.DENY)


def _approval(given: Approval | None, default: Approval, *, trusted: bool, floor: Approval) -> Approval:
    """The user's choice (``-T``) stands; a spec may make a tool stricter than its default, never
    looser (``approval: auto`` on a tool that writes, or on an MCP server's tools, still asks)."""
    if trusted:
        return given or default
    return max(given or default, default, floor, key=_STRICTNESS.index)


def _open(use: ToolUse, base: Path | None, *, trusted: bool, floor: Approval = Approval.AUTO) -> list[ActiveTool]:
    if use.name.startswith(MCP_PREFIX):
        from .mcp import open_mcp_tools

        tools = open_mcp_tools(use.name[len(MCP_PREFIX):], timeout=use.timeout, cwd=base, trusted=trusted)
        approval = _approval(use.approval, Approval.ASK, trusted=trusted, floor=floor)
        return [ActiveTool(t, approval, use.timeout) for t in tools]
    tool = open_tool(use, base_dir=base, trusted=trusted)
    approval = _approval(use.approval, default_approval(tool), trusted=trusted, floor=floor)
    return [ActiveTool(tool, approval, use.timeout, use.direct, use)]


__all__ = [
    "DEFAULT_RESULT_BUDGET",
    "Approver",
    "ToolEvents",
    "ToolLoop",
    "ToolSettings",
    "approve_all",
    "check_added_tools",
    "cut",
    "deny_all",
    "make_loop",
]
