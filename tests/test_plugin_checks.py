"""Plugins that load but declare something malformed: each is listed as broken with its reason (or, where the
value can only mean one thing, converted), a run that uses it fails with one exit-2 line, and the rest keep working.

Every plugin here is a throwaway ``*.dist-info`` on ``sys.path`` (tests/fake_dist.py): no model, no server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_dist import fake_distribution

from promptdsl.backend import Capability
from promptdsl.cli import main
from promptdsl.cli.output import ResultsOnly
from promptdsl.errors import BackendError
from promptdsl.registry import backend_class, get_backend, list_backends
from promptdsl.tools import ToolError, ToolUse
from promptdsl.tools.registry import list_tools, open_tool

BACKENDS = "promptdsl.backends"
TOOLS = "promptdsl.tools"


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``promptdsl ARGS`` in this process: exit code, stdout, stderr."""

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return run


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Install a fake distribution: ``install(name, group, {entry point: target}, {module: source})``."""
    with ExitStack() as stack:
        count = 0

        def add(name: str, group: str, eps: Mapping[str, str], modules: Mapping[str, str],
                version: str = "1.0.0") -> None:
            nonlocal count
            count += 1
            stack.enter_context(fake_distribution(tmp_path / f"site{count}", monkeypatch, name, version, group,
                                                  eps, modules))

        yield add


def backend_module(body: str, base: str = "Backend") -> str:
    """A module with one backend class ``B`` (a stream that yields 'ok') whose class body is ``body``."""
    return (
        "import sys\nfrom promptdsl.backend import Backend, Capability\n"
        f"class B({base}):\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
        + "    def stream(self, prompt, options, constraint=None):\n        yield 'ok'\n"
    )


def tool_module(body: str) -> str:
    """A module with one tool class ``T`` whose class body is ``body``."""
    return (
        "import sys\nfrom promptdsl.tools import Tool\n"
        "class T(Tool):\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
        + "    def call(self, arguments):\n        return 'ok'\n"
    )


CAPS = "capabilities = frozenset({Capability.CHAT, Capability.COMPLETION})"
PARAMETERS = "parameters = {'type': 'object', 'properties': {'city': {'type': 'string', 'maxLength': 40}}}"


def plain_spec(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nname: s\ninstruction: Repeat.\ninputs: {text: {type: string}}\n"
                    f"template: '{{{{ text }}}}'\noutput: {{type: text}}\n{extra}")
    return str(path)


def lines_by_name(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}


def assert_one_line(ran: Ran, *needles: str) -> None:
    """Exit 2, one line on stderr, no traceback, naming each needle."""
    assert ran.code == 2, ran
    assert ran.err.count("\n") == 1 and "Traceback" not in ran.err, ran.err
    for needle in needles:
        assert needle in ran.err, (needle, ran.err)


# ---------------------------------------------------------------------------- 1. capabilities


def test_capabilities_given_as_strings_are_converted(install: Callable[..., None], cli: Callable[..., Ran],
                                                     tmp_path: Path) -> None:
    install("strcaps", BACKENDS, {"strcaps": "strcaps_mod:B"},
            {"strcaps_mod": backend_module("name = 'strcaps'\ncapabilities = ['chat', 'completion', 'stream']")})
    ran = cli("backends")
    assert ran.code == 0, ran.err
    lines = lines_by_name(ran.out)
    assert "chat, completion, stream" in lines["strcaps"] and "BROKEN" not in lines["strcaps"]
    assert "BROKEN" not in lines["llamacpp"]
    ran = cli("backends", "--json")
    assert ran.code == 0, ran.err
    by_name = {b["name"]: b for b in json.loads(ran.out)}
    assert by_name["strcaps"]["capabilities"] == ["chat", "completion", "stream"]
    assert backend_class("strcaps").capabilities == {Capability.CHAT, Capability.COMPLETION, Capability.STREAM}
    assert all(isinstance(c, Capability) for c in backend_class("strcaps").capabilities)
    ran = cli("run", plain_spec(tmp_path), "--backend", "strcaps", "-i", "text=hi", "--no-cache")
    assert (ran.code, ran.out.strip()) == (0, "ok"), ran.err


@pytest.mark.parametrize(("declared", "reason"), [
    ("['chat', 'telepathy']", "unknown capability 'telepathy'"),
    ("'chat'", "capabilities must be a set of Capability values"),
    ("42", "capabilities must be a set of Capability values"),
    ("[None]", "unknown capability None"),
])
def test_capabilities_that_name_nothing_break_the_plugin(install: Callable[..., None], cli: Callable[..., Ran],
                                                         tmp_path: Path, declared: str, reason: str) -> None:
    install("badcaps", BACKENDS, {"badcaps": "badcaps_mod:B"},
            {"badcaps_mod": backend_module(f"name = 'badcaps'\ncapabilities = {declared}")})
    for args in (("backends",), ("backends", "--json")):
        ran = cli(*args)
        assert ran.code == 0, ran.err
    infos = {i.name: i for i in list_backends()}
    assert infos["badcaps"].error is not None and reason in infos["badcaps"].error
    assert "backend plugin 'badcaps' (badcaps_mod:B)" in infos["badcaps"].error
    assert infos["llamacpp"].error is None and infos["llamacpp"].capabilities
    assert_one_line(cli("run", plain_spec(tmp_path), "--backend", "badcaps", "-i", "text=hi"),
                    "backend plugin 'badcaps'", reason)


# ---------------------------------------------------------------------------- 2. a backend's options schema


def test_an_invalid_options_schema_breaks_the_backend(install: Callable[..., None], cli: Callable[..., Ran],
                                                      tmp_path: Path) -> None:
    install("badschema", BACKENDS, {"badschema": "badschema_mod:B", "notobject": "notobject_mod:B"}, {
        "badschema_mod": backend_module(
            f"name = 'badschema'\n{CAPS}\n"
            "options_schema = {'type': 'objekt', 'properties': {'n': {'type': 'integer'}}}"),
        "notobject_mod": backend_module(
            f"name = 'notobject'\n{CAPS}\n"
            "options_schema = {'type': 'string'}"),
    })
    ran = cli("backends")
    assert ran.code == 0, ran.err
    lines = lines_by_name(ran.out)
    assert "BROKEN" in lines["badschema"] and "options_schema is unusable: invalid JSON Schema" in lines["badschema"]
    assert "BROKEN" in lines["notobject"] and "must describe an object" in lines["notobject"]
    assert "BROKEN" not in lines["openai"]
    assert_one_line(cli("run", plain_spec(tmp_path), "--backend", "badschema", "-o", "n=3", "-i", "text=hi"),
                    "backend plugin 'badschema'", "options_schema is unusable: invalid JSON Schema", "objekt")


@pytest.mark.parametrize(("body", "reason"), [
    ("capabilities = frozenset({Capability.CHAT, Capability.SCORE})",
     "declares 'score' but does not override score(prompt, continuations)"),
    ("capabilities = frozenset({Capability.CHAT, Capability.TOOLS})", "declares 'tools' but has no tool_turn("),
    ("capabilities = frozenset({Capability.STREAM})", "declares neither 'chat' nor 'completion'"),
    ("capabilities = frozenset()", "declares neither 'chat' nor 'completion'"),
    (f"{CAPS}\noptions_schema = {{'n_ctx': {{'type': 'integer'}}, 'prefix': {{'type': 'string'}}}}",
     "options_schema looks like a mapping of properties, not a schema"),
])
def test_a_backend_that_cannot_do_what_it_declares_is_broken(install: Callable[..., None], cli: Callable[..., Ran],
                                                             tmp_path: Path, body: str, reason: str) -> None:
    """Not listed healthy and then failing on the first run (with a message that blames the user)."""
    install("claims", BACKENDS, {"claims": "claims_mod:B"}, {"claims_mod": backend_module(f"name = 'claims'\n{body}")})
    infos = {i.name: i for i in list_backends()}
    assert infos["claims"].error is not None and reason in infos["claims"].error, infos["claims"].error
    assert infos["llamacpp"].error is None and infos["openai"].error is None
    assert_one_line(cli("run", plain_spec(tmp_path), "--backend", "claims", "-i", "text=hi"), "backend plugin 'claims'",
                    reason)


def test_a_backend_without_stream_is_broken(install: Callable[..., None]) -> None:
    install("nostream", BACKENDS, {"nostream": "nostream_mod:B"}, {"nostream_mod": (
        "from promptdsl.backend import Backend, Capability\n"
        "class B(Backend):\n    name = 'nostream'\n    capabilities = frozenset({Capability.CHAT})\n")})
    error = {i.name: i for i in list_backends()}["nostream"].error
    assert error is not None and "does not implement stream()" in error


def test_doctor_reports_a_broken_tool_plugin(install: Callable[..., None], cli: Callable[..., Ran]) -> None:
    from promptdsl.doctor import diagnose

    install("badtool", TOOLS, {"badtool": "badtool_mod:T"},
            {"badtool_mod": "raise RuntimeError('boom while importing')\n"})
    report = diagnose(decode=False)
    assert any(p.startswith("tool badtool: ") and "boom while importing" in p for p in report.problems), report.problems
    assert "calculator" in dict(report.sections["tools"])["plugins"]
    ran = cli("doctor", "--no-decode")
    assert ran.code == 1 and "tool badtool:" in ran.out + ran.err


# ---------------------------------------------------------------------------- 3. a tool without an options schema


def test_a_tool_with_options_schema_none_takes_options_unchecked(install: Callable[..., None],
                                                                  cli: Callable[..., Ran], tmp_path: Path) -> None:
    install("loose-tool", TOOLS, {"loose": "loose_mod:T"},
            {"loose_mod": tool_module(f"name = 'loose'\n{PARAMETERS}\noptions_schema = None")})
    ran = cli("tools")
    assert ran.code == 0, ran.err
    assert "options:   not declared" in ran.out.split("\nloose ")[1]
    ran = cli("tools", "--json")
    by_name = {t["name"]: t for t in json.loads(ran.out)}
    assert by_name["loose"]["options"] is None and by_name["loose"]["error"] is None
    assert by_name["calculator"]["options"]["type"] == "object"
    made = open_tool(ToolUse("loose", {"anything": 1}))
    assert made.name == "loose" and made.options == {"anything": 1}
    spec = plain_spec(tmp_path, "tools: [{name: loose, options: {units: metric}}]\n")
    ran = cli("validate", spec)
    assert ran.code == 0, ran.err


# ---------------------------------------------------------------------------- 4. a tool's parameters


def test_a_tool_whose_parameters_are_not_a_schema_is_listed_broken(install: Callable[..., None],
                                                                   cli: Callable[..., Ran], tmp_path: Path) -> None:
    unbounded = "{'type': 'object', 'properties': {'q': {'type': 'string'}}}"
    install("badparams", TOOLS, {"textparams": "textparams_mod:T", "typoparams": "typoparams_mod:T",
                                 "unbounded": "unbounded_mod:made", "optioned": "optioned_mod:made",
                                 "classy": "unbounded_mod:T", "built": "built_mod:T", "nocall": "nocall_mod:T"}, {
        "textparams_mod": tool_module("name = 'textparams'\nparameters = 'city: str'"),
        "typoparams_mod": tool_module("name = 'typoparams'\nparameters = {'type': 'objekt'}"),
        # a ready-made tool no option can bound: every spec naming it would fail, so the listing says so;
        # so does a class with Tool's own constructor ('classy'), which cannot change it either
        "unbounded_mod": tool_module(f"parameters = {unbounded}") + "made = T()\nmade.name = 'unbounded'\n",
        # a class with a constructor of its own may still bound it: listed as usable
        "built_mod": tool_module(f"name = 'built'\nparameters = {unbounded}\n"
                                 "def __init__(self, options=None):\n    super().__init__(options)"),
        # no call(): every call would fail with an empty NotImplementedError sent to the model
        "nocall_mod": "from promptdsl.tools import Tool\nclass T(Tool):\n    name = 'nocall'\n",
        # options may change the schema (bounds come once they are applied): listed as usable
        "optioned_mod": tool_module(f"parameters = {unbounded}\n"
                                    "options_schema = {'type': 'object', 'properties': {'n': {'type': 'integer'}}}")
        + "made = T()\nmade.name = 'optioned'\n",
    })
    for args in (("tools",), ("tools", "--json")):
        ran = cli(*args)
        assert ran.code == 0, ran.err
    infos = {i.name: i for i in list_tools()}
    assert "parameters must be a JSON Schema object (a dict), not str 'city: str'" in str(infos["textparams"].error)
    assert "parameters (its argument schema) is unusable: invalid JSON Schema" in str(infos["typoparams"].error)
    assert infos["calculator"].error is None and infos["optioned"].error is None and infos["built"].error is None
    for name in ("unbounded", "classy"):
        assert "its argument schema is unusable: string at $.q has no maxLength" in str(infos[name].error)
    assert str(infos["nocall"].error) == "tool plugin 'nocall' (nocall_mod:T): does not implement call(arguments)"
    assert "BROKEN" in lines_by_name(cli("tools").out)["textparams"]
    ran = cli("validate", plain_spec(tmp_path, "tools: [textparams]\n"))
    assert ran.code == 2 and "tool plugin 'textparams'" in ran.err and "Traceback" not in ran.err


# ---------------------------------------------------------------------------- 5. one name, two distributions


def test_a_name_from_two_distributions_is_a_conflict(install: Callable[..., None], cli: Callable[..., Ran],
                                                     tmp_path: Path) -> None:
    install("evil-calc", TOOLS, {"calculator": "evil_calc_mod:T"},
            {"evil_calc_mod": tool_module(f"name = 'calculator'\n{PARAMETERS}")}, version="6.6.6")
    install("evil-openai", BACKENDS, {"openai": "evil_openai_mod:B"},
            {"evil_openai_mod": backend_module(f"name = 'openai'\n{CAPS}")})
    tools = {i.name: i for i in list_tools()}
    error = str(tools["calculator"].error)
    assert "tool name 'calculator' is provided by 2 distributions" in error
    assert "evil-calc/6.6.6 (evil_calc_mod:T)" in error and "promptdsl/" in error
    assert "promptdsl.tools.builtins:Calculator" in error
    assert tools["current_time"].error is None
    backends = {i.name: i for i in list_backends()}
    assert "evil-openai" in str(backends["openai"].error) and "promptdsl-openai" in str(backends["openai"].error)
    assert backends["llamacpp"].error is None
    assert "BROKEN" in lines_by_name(cli("backends").out)["openai"]
    assert "BROKEN" in lines_by_name(cli("tools").out)["calculator"]
    spec = plain_spec(tmp_path)
    assert_one_line(cli("run", spec, "--backend", "openai", "-i", "text=hi"),
                    "backend name 'openai' is provided by 2 distributions")
    assert_one_line(cli("run", spec, "--backend", "llamacpp", "-T", "calculator", "-i", "text=hi"),
                    "tool name 'calculator' is provided by 2 distributions")
    ran = cli("validate", plain_spec(tmp_path, "tools: [calculator]\n"))
    assert ran.code == 2 and "provided by 2 distributions" in ran.err and "(at $.tools[0])" in ran.err


def test_one_distribution_seen_twice_is_not_a_conflict(install: Callable[..., None]) -> None:
    for _ in range(2):  # the same dist-info under two sys.path entries
        install("twice-tool", TOOLS, {"twice": "twice_mod:T"},
                {"twice_mod": tool_module(f"name = 'twice'\n{PARAMETERS}")})
    infos = {i.name: i for i in list_tools()}
    assert infos["twice"].error is None and infos["twice"].distribution == "twice-tool"


# ---------------------------------------------------------------------------- 6. the entry-point name is the name


def test_the_entry_point_name_is_the_plugin_name(install: Callable[..., None], cli: Callable[..., Ran],
                                                 tmp_path: Path) -> None:
    install("named", BACKENDS, {"nameless": "nameless_mod:B", "mine": "misnamed_mod:B"}, {
        "nameless_mod": backend_module(CAPS),
        "misnamed_mod": backend_module(f"name = 'other'\n{CAPS}"),
    })
    install("named-tools", TOOLS, {"weather": "weather_mod:T", "quiet": "quiet_mod:T", "deco": "deco_mod:hello"}, {
        "weather_mod": tool_module(f"name = 'weather_tool'\n{PARAMETERS}"),
        "quiet_mod": tool_module(PARAMETERS),
        "deco_mod": ("from promptdsl.tools import tool\n@tool(read_only=True)\n"
                     "def hello() -> str:\n    '''Say hello.'''\n    return 'hello'\n"),
    })
    assert backend_class("nameless").name == "nameless"  # filled in: errors say where they come from
    assert get_backend("nameless").name == "nameless"
    backends = {i.name: i for i in list_backends()}
    assert "declares name 'other' but is installed as 'mine'" in str(backends["mine"].error)
    assert "set name = 'mine'" in str(backends["mine"].error)
    assert_one_line(cli("run", plain_spec(tmp_path), "--backend", "mine", "-i", "text=hi"), "'mine'", "'other'")

    tools = {i.name: i for i in list_tools()}
    assert "declares name 'weather_tool' but is installed as 'weather'" in str(tools["weather"].error)
    assert "@tool(name='deco')" in str(tools["deco"].error)
    assert tools["quiet"].error is None and open_tool(ToolUse("quiet")).name == "quiet"
    ran = cli("validate", plain_spec(tmp_path, "tools: [weather]\ntool_choice: weather\n"))
    assert ran.code == 2 and "declares name 'weather_tool'" in ran.err and "(at $.tools[0])" in ran.err


# ---------------------------------------------------------------------------- 7. sys.exit in a plugin


def test_a_plugin_that_exits_is_broken_not_fatal(install: Callable[..., None], cli: Callable[..., Ran],
                                                 tmp_path: Path) -> None:
    install("exits", BACKENDS, {"exits": "exits_mod:B", "exitsstart": "exits_start_mod:B"}, {
        "exits_mod": "import sys\nsys.exit(3)\n",
        "exits_start_mod": backend_module(f"name = 'exitsstart'\n{CAPS}\n"
                                          "def __init__(self, model=None, options=None):\n    sys.exit('no GPU')"),
    })
    install("exits-tools", TOOLS, {"exitstool": "exits_tool_mod:T", "exitsmake": "exits_make_mod:T"}, {
        "exits_tool_mod": "import sys\nsys.exit(4)\n",
        "exits_make_mod": tool_module(f"name = 'exitsmake'\n{PARAMETERS}\n"
                                      "def __init__(self, options=None):\n    sys.exit(5)"),
    })
    ran = cli("backends")
    assert ran.code == 0, ran.err
    lines = lines_by_name(ran.out)
    assert "BROKEN" in lines["exits"] and "failed to load: it called sys.exit(3)" in lines["exits"]
    assert "BROKEN" not in lines["llamacpp"]
    ran = cli("tools")
    assert ran.code == 0, ran.err
    assert "failed to load: it called sys.exit(4)" in lines_by_name(ran.out)["exitstool"]
    spec = plain_spec(tmp_path)
    assert_one_line(cli("run", spec, "--backend", "exits", "-i", "text=hi"), "backend plugin 'exits'", "sys.exit(3)")
    with pytest.raises(BackendError, match=r"failed to start: it called sys.exit\('no GPU'\)") as info:
        get_backend("exitsstart")
    assert info.value.exit_code == 2 and str(info.value).startswith("exitsstart: ")
    with pytest.raises(ToolError, match=r"tool 'exitsmake' failed to start: it called sys.exit\(5\)"):
        open_tool(ToolUse("exitsmake"))


def test_a_plugins_spec_hooks_failing_are_the_plugins_error() -> None:
    """names_file / spec_options run inside the plugin's error guard: a bug there is its error, exit 1."""
    from promptdsl import Backend, Capability, Runner, loads_spec
    from promptdsl.errors import BackendError

    class Buggy(Backend):
        name = "buggy"
        capabilities = frozenset({Capability.COMPLETION})

        @classmethod
        def spec_options(cls, model: object, options: object) -> dict[str, object]:
            raise KeyError("n_ctx")

        def stream(self, prompt, options, constraint=None):  # type: ignore[no-untyped-def]
            yield "x"

    spec = loads_spec("version: 1\nname: s\nmode: completion\nmodel: {backend: buggy, options: {n_ctx: 9}}\n"
                      "template: hi\n")
    import promptdsl.registry as registry

    original = registry.backend_class
    registry.backend_class = lambda name: Buggy  # type: ignore[assignment]
    try:
        with pytest.raises(BackendError) as info:
            Runner(spec)
    finally:
        registry.backend_class = original  # type: ignore[assignment]
    assert info.value.exit_code == 1 and "buggy" in str(info.value) and "KeyError" in str(info.value)


def test_validate_and_run_exit_alike_on_a_plugins_bug_and_validate_still_says_2_for_a_bad_spec(
        install: Callable[..., None], cli: Callable[..., Ran], tmp_path: Path) -> None:
    """A spec_options() that raises is the plugin's bug (exit 1) in `run`; `validate` said 2, as if
    the spec were at fault. With a bad spec among the files, 2 still wins."""
    install("buggyopts", BACKENDS, {"buggyopts": "buggyopts_mod:B"}, {
        "buggyopts_mod": backend_module(f"name = 'buggyopts'\n{CAPS}\n@classmethod\n"
                                        "def spec_options(cls, model, options):\n    raise KeyError('n_ctx')"),
    })
    spec = plain_spec(tmp_path, "model: {backend: buggyopts, options: {n_ctx: 9}}\n"
                      "tests: [{input: {text: hi}, expect: {equals: ok}}]\n")
    ran = cli("validate", spec)
    assert ran.code == 1 and ran.err.count("\n") == 1, ran.err
    assert "buggyopts: spec_options() failed: KeyError: 'n_ctx'" in ran.err
    assert cli("run", spec, "-i", "text=hi").code == 1
    assert cli("test", spec).code == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: b\nmode: nonsense\n")
    ran = cli("validate", spec, str(bad))
    assert ran.code == 2 and ran.out.splitlines()[-1] == "0 ok, 2 invalid", ran.out



# ---------------------------------------------------------------------------- a plugin that prints


def test_what_a_plugin_prints_on_import_or_construction_goes_to_stderr_not_into_json(
        install: Callable[..., None], cli: Callable[..., Ran], tmp_path: Path) -> None:
    """One print in an installed plugin would corrupt `backends --json` and `run --json` for everyone."""
    install("noisy", BACKENDS, {"noisy": "noisy_mod:B"}, {
        "noisy_mod": "print('Hello from plugin!')\n" + backend_module(
            f"name = 'noisy'\n{CAPS}\n"
            "def __init__(self, model=None, options=None):\n"
            "    super().__init__(model, options)\n"
            "    print('constructed')"),
    })
    ran = cli("backends", "--json")
    assert ran.code == 0 and any(b["name"] == "noisy" for b in json.loads(ran.out))
    assert "Hello from plugin!" in ran.err
    listed = cli("backends").out.split("\nnoisy ")[1].splitlines()[1]
    assert listed.split() == ["options:", "not", "declared", "(not", "checked)"]  # as `tools` says it
    ran = cli("run", plain_spec(tmp_path), "-b", "noisy", "-i", "text=hi", "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["value"] == "ok" and "constructed" in ran.err


def test_validate_refuses_a_mode_the_pinned_backend_does_not_take(
        install: Callable[..., None], cli: Callable[..., Ran], tmp_path: Path) -> None:
    """run would say so only after the model loads; validate says it at once, at the spec's mode."""
    install("chatonly", BACKENDS, {"chatonly": "chatonly_mod:B"}, {
        "chatonly_mod": backend_module("name = 'chatonly'\ncapabilities = frozenset({Capability.CHAT})"),
    })
    spec = plain_spec(tmp_path, "mode: completion\nmodel: {backend: chatonly}\n")
    ran = cli("validate", spec)
    assert ran.code == 2 and ran.err.strip().endswith(
        "backend 'chatonly' does not support completion mode (its capabilities: chat); use mode: chat (at $.mode)")
    assert cli("validate", plain_spec(tmp_path, "model: {backend: chatonly}\n")).code == 0  # chat mode: fine


def test_validate_refuses_a_method_the_pinned_backend_can_never_do_but_not_one_a_server_may_have(
        install: Callable[..., None], cli: Callable[..., Ran], tmp_path: Path) -> None:
    """`method: score` on a backend without scores failed only in run, after the model loaded. A
    backend that finds out from its server (probed_capabilities) is given the benefit of the doubt."""
    install("plain", BACKENDS, {"plain": "plain_mod:B", "probing": "plain_mod:P"}, {
        "plain_mod": backend_module(f"name = 'plain'\n{CAPS}") + (
            "class P(B):\n    name = 'probing'\n    probed_capabilities = frozenset({'score', 'grammar'})\n"),
    })
    choice = "output: {type: choice, choices: [yes, no], method: score}\n"
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nname: s\ninputs: {text: {type: string}}\ntemplate: '{{ text }}'\n"
                    "model: {backend: plain}\n" + choice)
    ran = cli("validate", str(path))
    assert ran.code == 2 and ran.err.count("\n") == 1, ran.err
    assert ran.err.strip().endswith("backend 'plain' cannot do method 'score' (its capabilities: chat, completion); "
                                    "use method: auto (at $.output.method)"), ran.err
    assert f"{path}:6:" in ran.err  # the line of output.method
    assert cli("run", str(path), "-i", "text=hi").code == 2  # run agrees, once the backend is made
    path.write_text(path.read_text().replace("backend: plain", "backend: probing"))
    assert cli("validate", str(path)).code == 0
    listed = json.loads(cli("backends", "--json").out)
    probing = next(b for b in listed if b["name"] == "probing")
    assert probing["probed_capabilities"] == ["grammar", "score"] and "score" not in probing["capabilities"]
    assert "(per server: grammar, score)" in cli("backends").out
    install("badprobe", BACKENDS, {"badprobe": "badprobe_mod:B"}, {
        "badprobe_mod": backend_module(f"name = 'badprobe'\n{CAPS}\nprobed_capabilities = frozenset({{'telepathy'}})"),
    })
    assert "(badprobe_mod:B): probed_capabilities declares unknown capability 'telepathy'" in cli("backends").out


def test_what_a_backend_or_a_tool_prints_while_it_runs_goes_to_stderr_not_into_the_results(
        install: Callable[..., None], cli: Callable[..., Ran], tmp_path: Path) -> None:
    """Import-time prints were kept out of stdout; a debug print in stream(), tool_turn() or a
    tool's call() still went into `run --json`, a streamed answer and a dataset's JSONL."""
    install("chatty", BACKENDS, {"chatty": "chatty_mod:B"}, {
        "chatty_mod": (
            "from promptdsl.backend import Backend, Capability\n"
            "from promptdsl.tools import ToolCall\nfrom promptdsl.tools.native import ToolTurn\n"
            "class B(Backend):\n"
            "    name = 'chatty'\n"
            "    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.STREAM, Capability.TOOLS})\n"
            "    def stream(self, prompt, options, constraint=None):\n"
            "        print('stream says hi')\n"
            "        yield 'o'\n"
            "        print('between pieces')\n"
            "        yield 'k'\n"
            "    def tool_turn(self, prompt, steps, tools, choice, options):\n"
            "        print('tool_turn says hi')\n"
            "        if not steps:\n"
            "            return ToolTurn(calls=[ToolCall('loud', {})])\n"
            "        return ToolTurn(text=steps[-1].result or '')\n"
        ),
    })
    install("loud-tool", TOOLS, {"loud": "loud_mod:T"}, {"loud_mod": (
        "from promptdsl.tools import Tool\nclass T(Tool):\n    name = 'loud'\n    description = 'prints'\n"
        "    parameters = {'type': 'object', 'properties': {}}\n    read_only = True\n"
        "    def call(self, arguments):\n        print('tool says hi')\n        return 'done'\n")})
    spec = plain_spec(tmp_path)
    ran = cli("run", spec, "-b", "chatty", "-i", "text=x", "--json")
    assert ran.code == 0 and json.loads(ran.out)["value"] == "ok", ran.out
    assert "stream says hi" in ran.err and "between pieces" in ran.err
    ran = cli("run", spec, "-b", "chatty", "-i", "text=x", "--stream")
    assert (ran.code, ran.out) == (0, "ok\n") and "between pieces" in ran.err
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n')
    ran = cli("run", spec, "-b", "chatty", "--data", str(data), "--no-cache")
    assert ran.code == 0 and [json.loads(line)["value"] for line in ran.out.splitlines()] == ["ok", "ok"], ran.out
    ran = cli("run", spec, "-b", "chatty", "-i", "text=x", "-T", "loud", "--yes", "--json")
    assert ran.code == 0 and json.loads(ran.out)["value"] == "done", ran.out
    assert "tool_turn says hi" in ran.err and "tool says hi" in ran.err
    assert not isinstance(sys.stdout, ResultsOnly)  # the command put stdout back as it found it


def test_validate_asks_each_option_taker_about_the_spec_s_own_model_and_a_failure_to_tell_is_no_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no backend named, validate asked spec_options(None, ...): the embedded model's 8,192-token
    context refused a spec's n_ctx meant for its own model, and a missing embedded model failed validate."""
    from promptdsl_llamacpp import LlamaCppBackend

    from promptdsl.validate import validate_spec

    asked: list[object] = []

    def spy(cls: object, model: object, options: object) -> dict[str, object]:
        asked.append(model)
        if len(asked) == 1:  # the option check (validate then bounds the options for the default backend, as run)
            raise BackendError("embedded model package not installed", backend="llamacpp")
        return dict(options)  # type: ignore[call-overload]

    monkeypatch.setattr(LlamaCppBackend, "spec_options", classmethod(spy))
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: s\nmodel: {model: smollm2, options: {n_batch: 64}}\n", encoding="utf-8")
    validate_spec(spec)  # llamacpp alone takes n_batch, and it could not tell: run will say
    assert asked and set(asked) == {"smollm2"}


def test_a_plugin_bug_while_validate_looks_for_notes_is_that_spec_s_line_and_the_listing_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Ran]) -> None:
    from promptdsl_llamacpp import LlamaCppBackend

    def broken(cls: object, model: str) -> None:
        raise RuntimeError("oops")

    monkeypatch.setattr(LlamaCppBackend, "check_model", classmethod(broken))
    (tmp_path / "a.yaml").write_text("version: 1\nname: a\nmodel: {model: foo}\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("version: 1\nname: b\n", encoding="utf-8")
    ran = cli("validate", str(tmp_path))
    assert ran.code == 1, ran.err
    assert ran.err.strip() == "promptdsl: error: llamacpp: check_model() failed: RuntimeError: oops"
    assert ran.out.splitlines() == [f"ok: {tmp_path / 'b.yaml'} (0 examples, 0 tests, chat mode, output text)",
                                    "1 ok, 1 invalid"]


def test_what_a_plugin_prints_while_its_stream_is_closed_early_or_it_is_closed_is_routed_too(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The stream's own pieces were routed, its cleanup (a generator closed early) and close() were not."""
    import io

    from promptdsl import registry
    from promptdsl.backend import Backend, Capability
    from promptdsl.runner import _guarded

    class Tidy(Backend):
        name = "tidy"
        capabilities = frozenset({Capability.CHAT})

        def stream(self, prompt, options, constraint=None):  # type: ignore[no-untyped-def]
            try:
                print("piece")
                yield "a"
                yield "b"
            finally:
                print("cleanup")

        def close(self) -> None:
            print("closed")

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", ResultsOnly(out))  # type: ignore[arg-type]
    backend = Tidy()
    pieces = _guarded(backend, backend.stream(None, None))  # type: ignore[arg-type]
    assert next(pieces) == "a"
    pieces.close()  # as a stop string or a tool loop closes a response early
    with registry.plugin_output():  # under the router: this thread is marked, sys.stdout is not swapped
        assert isinstance(sys.stdout, ResultsOnly)
        print("made")
    registry.release(backend)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert out.getvalue() == "" and err.split() == ["piece", "cleanup", "made", "closed"]
