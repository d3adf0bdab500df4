"""Third-party backend plugins, discovered through real entry points (no mocks).

- The example package in plugins/example is pip-installed into a temporary
  directory, found through its ``promptdsl.backends`` entry point, listed,
  used to run a spec, and checked with the conformance kit.
- Broken plugins (import error, exception at import, wrong type) live in a
  temporary ``*.dist-info`` on ``sys.path``: each is reported by name and the
  other backends keep working.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_dist import fake_distribution

from promptdsl.cli import main
from promptdsl.registry import backend_class, list_backends

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "plugins" / "example"


# ---------------------------------------------------------------------------- the example package, installed


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plugins/example installed with pip into a fresh directory (a copy is built, so the repo stays clean)."""
    base = tmp_path_factory.mktemp("echo")
    source = base / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = base / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input", "--target", str(target)]
    if importlib.util.find_spec("wheel") is not None:  # setuptools can build offline, without an isolated env
        cmd.append("--no-build-isolation")
    proc = subprocess.run([*cmd, str(source)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "promptdsl_echo" / "__init__.py").is_file()
    assert list(target.glob("promptdsl_echo-0.1.0.dist-info/entry_points.txt"))
    return target


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def echo_cli(echo_site: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Ran]]:
    """The promptdsl CLI, in this process, with the installed example package on ``sys.path``
    (importlib.metadata then finds its entry point exactly as for a site-packages install)."""
    monkeypatch.syspath_prepend(str(echo_site))

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    yield run
    for name in [m for m in sys.modules if m.startswith("promptdsl_echo")]:
        del sys.modules[name]


def test_example_plugin_is_listed_with_version_and_capabilities(echo_cli: Callable[..., Ran]) -> None:
    proc = echo_cli("backends", "--json")
    assert proc.returncode == 0, proc.stderr
    by_name = {b["name"]: b for b in json.loads(proc.stdout)}
    assert by_name["echo"].pop("options")["properties"]["prefix"]["type"] == "string"
    assert by_name["echo"] == {
        "name": "echo", "version": "0.1.0", "distribution": "promptdsl-echo",
        "capabilities": ["chat", "completion", "stream"], "probed_capabilities": [], "error": None,
    }
    assert by_name["openai"]["capabilities"] == ["chat", "completion", "json_schema", "stream", "tools"]
    assert by_name["openai"]["probed_capabilities"] == ["grammar", "score"]  # on a llama.cpp-family server
    assert by_name["openai"]["distribution"] == "promptdsl-openai" and by_name["openai"]["error"] is None
    assert by_name["llamacpp"]["error"] is None


def test_example_plugin_runs_a_spec(echo_cli: Callable[..., Ran], tmp_path: Path) -> None:
    spec = tmp_path / "shout.yaml"
    spec.write_text(
        "version: 1\nname: shout\nmode: chat\ninstruction: Repeat the text.\n"
        "inputs: {text: {type: string}}\ntemplate: '{{ text }}'\n"
        "model: {backend: echo, options: {prefix: 'You said: '}}\n"
        "output: {type: regex, pattern: 'said: (?P<answer>.*)'}\n"
        "tests:\n  - input: {text: hello there}\n    expect: hello there\n"
    )
    proc = echo_cli("run", str(spec), "--input", "text=hello plugin world", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["value"] == "hello plugin world"
    assert result["backend"] == "echo" and result["method"] == "generate" and result["model"] == "echo"
    proc = echo_cli("test", str(spec))
    assert proc.returncode == 0 and "1 passed, 0 failed" in proc.stdout, proc.stdout + proc.stderr
    # max_tokens cuts the echo: it ends its stream with CUT_OFF, as docs/plugins.md asks
    proc = echo_cli("run", str(spec), "--input", "text=one two three four", "-o", "max_tokens=5", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["truncated"] == "max_tokens", proc.stderr
    assert "may be incomplete" in proc.stderr


def test_example_plugin_passes_the_conformance_kit(echo_site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(echo_site)}
    proc = subprocess.run([sys.executable, "-m", "promptdsl.testing", "echo"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 passed, 0 failed, 3 skipped" in proc.stdout
    assert "SKIP  score_matches_generation: the backend does not declare 'score'" in proc.stdout


def test_example_plugin_errors_are_clean(echo_cli: Callable[..., Ran], tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\nname: s\ninstruction: Repeat.\ninputs: {text: {type: string}}\n"
                    "template: '{{ text }}'\noutput: {type: text}\n")
    proc = echo_cli("run", str(spec), "--backend", "echo", "-o", "n_ctx=3",
                    "--input", "text=one two three four five")
    assert proc.returncode == 2
    assert proc.stderr.startswith("promptdsl: error: echo: the prompt is") and proc.stderr.count("\n") == 1
    proc = echo_cli("run", str(spec), "--backend", "echo", "-o", "prefx=hi", "--input", "text=one")
    assert proc.returncode == 2
    assert proc.stderr == ("promptdsl: error: echo: unknown option 'prefx' (did you mean 'prefix'?); "
                           "this backend's options: n_ctx, prefix (and the generation settings max_tokens, seed, "
                           "stop, temperature, top_k, top_p)\n")
    proc = echo_cli("run", str(spec), "--backend", "echo", "-o", "temprature=0", "--input", "text=one")
    assert "unknown option 'temprature' (did you mean 'temperature'?)" in proc.stderr


# ---------------------------------------------------------------------------- broken plugins


@pytest.fixture
def broken_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution with three broken backends, visible to importlib.metadata through sys.path."""
    entry_points = {"missing": "promptdsl_no_such_module:Backend", "explodes": "broken_backend_explodes:Backend",
                    "wrongtype": "json:loads"}
    modules = {"broken_backend_explodes": 'raise RuntimeError("boom while importing")\n'}
    with fake_distribution(tmp_path / "site", monkeypatch, "broken-backends", "1.2.3", "promptdsl.backends",
                           entry_points, modules) as site:
        yield site


def test_broken_plugins_are_reported_by_name(broken_plugins: Path) -> None:
    infos = {i.name: i for i in list_backends()}
    assert infos["missing"].error is not None and "ModuleNotFoundError" in infos["missing"].error
    assert infos["explodes"].error is not None and "RuntimeError: boom while importing" in infos["explodes"].error
    assert infos["wrongtype"].error is not None and "not a promptdsl.backend.Backend subclass" in infos["wrongtype"].error
    assert {i.version for n, i in infos.items() if n in {"missing", "explodes", "wrongtype"}} == {"1.2.3"}
    for good in ("llamacpp", "openai"):
        assert infos[good].error is None and infos[good].capabilities


def test_backends_command_lists_broken_and_working(broken_plugins: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "BROKEN" in lines["missing"] and "promptdsl_no_such_module" in lines["missing"]
    assert "BROKEN" in lines["wrongtype"] and "BROKEN" in lines["explodes"]
    assert "BROKEN" not in lines["llamacpp"] and "score" in lines["llamacpp"]
    assert "BROKEN" not in lines["openai"] and "json_schema" in lines["openai"]


@pytest.mark.model
def test_a_broken_plugin_does_not_stop_the_others(broken_plugins: Path, capsys: pytest.CaptureFixture[str],
                                                  llamacpp_backend: object) -> None:
    spec = str(ROOT / "specs" / "sentiment.yaml")
    code = main(["run", spec, "--backend", "explodes", "--input", "text=I love it"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "backend plugin 'explodes'" in err and "boom while importing" in err
    assert main(["run", spec, "--backend", "llamacpp", "--input", "text=I love this city!"]) == 0
    assert capsys.readouterr().out.strip() == "Positive"
    with pytest.raises(Exception, match="'wrongtype'"):
        backend_class("wrongtype")


FAMILY = '''
from promptdsl.backend import Backend, Capability
from promptdsl.registry import get_backend


class Base(Backend):  # no name: the registry gives it its entry point's
    capabilities = frozenset({Capability.CHAT, Capability.STREAM})

    def stream(self, prompt, options, constraint=None):
        yield "base"


class Variant(Base):  # inherits Base, and whatever name Base was given
    def stream(self, prompt, options, constraint=None):
        yield "variant"


class Wrapper(Base):  # builds another backend in its constructor
    def __init__(self, model=None, options=None):
        super().__init__(model, options)
        self.inner = get_backend("family-base")

    def stream(self, prompt, options, constraint=None):
        for piece in self.inner.stream(prompt, options, constraint):
            yield piece.upper()
'''


def test_subclasses_and_wrappers_of_a_plugin_work_in_any_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from promptdsl import registry
    from promptdsl.backend import GenerationOptions
    from promptdsl.prompt import Message, Prompt

    monkeypatch.setattr(registry, "_instances", {})
    entry = {"family-base": "family_plugin:Base", "family-variant": "family_plugin:Variant",
             "family-wrapper": "family_plugin:Wrapper"}
    with fake_distribution(tmp_path / "site", monkeypatch, "family", "1.0", "promptdsl.backends", entry,
                           {"family_plugin": FAMILY}):
        prompt = Prompt(mode="chat", messages=(Message("user", "hi"),))
        text = {}
        for name in ("family-base", "family-variant", "family-wrapper"):  # the base first: its name is set then
            backend = registry.get_backend(name)
            assert backend.name == name
            text[name] = "".join(backend.stream(prompt, GenerationOptions()))
        assert text == {"family-base": "base", "family-variant": "variant", "family-wrapper": "BASE"}
        infos = {i.name: i for i in list_backends()}
        assert all(infos[n].error is None for n in entry)  # none is listed as broken for a name it inherited


def test_one_class_under_two_names_is_usable_by_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from promptdsl import registry

    monkeypatch.setattr(registry, "_instances", {})
    entry = {"twin-a": "twin_plugin:Base", "twin-b": "twin_plugin:Base"}
    with fake_distribution(tmp_path / "site", monkeypatch, "twins", "1.0", "promptdsl.backends", entry,
                           {"twin_plugin": FAMILY}):
        for first, second in (("twin-a", "twin-b"), ("twin-b", "twin-a")):
            registry.get_backend(first)
            registry.get_backend(second)  # the registry named the class after the first: not a declared name
            infos = {i.name: i for i in list_backends()}
            assert infos["twin-a"].error is None and infos["twin-b"].error is None


POOLED = FAMILY + '''

from concurrent.futures import ThreadPoolExecutor
from promptdsl.registry import release


class Pooled(Base):  # makes its inner backends in other threads, and releases them when closed
    def __init__(self, model=None, options=None):
        super().__init__(model, options)
        with ThreadPoolExecutor(2) as pool:
            self.inner = list(pool.map(get_backend, ["pooled-base", "pooled-variant"]))

    def close(self):
        for inner in self.inner:
            release(inner)
'''


def test_a_backend_that_makes_others_in_threads_neither_hangs_nor_breaks_close_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from promptdsl import registry

    monkeypatch.setattr(registry, "_instances", {})
    entry = {"pooled-base": "pooled_plugin:Base", "pooled-variant": "pooled_plugin:Variant",
             "pooled": "pooled_plugin:Pooled"}
    with fake_distribution(tmp_path / "site", monkeypatch, "pooled", "1.0", "promptdsl.backends", entry,
                           {"pooled_plugin": POOLED}):
        made: list[object] = []
        worker = threading.Thread(target=lambda: made.append(registry.get_backend("pooled")), daemon=True)
        worker.start()
        worker.join(20)
        assert made, "get_backend hung: the registry's lock was held while the plugin made its inner backends"
        assert [b.name for b in made[0].inner] == ["pooled-base", "pooled-variant"]  # type: ignore[attr-defined]
        registry.close_all()  # the wrapper's close releases its inner backends: no deadlock, no error
        assert registry._instances == {}


def test_promptdsl_test_names_every_invalid_spec_and_runs_the_rest(echo_cli: Callable[..., Ran],
                                                                    tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nname: good\ninputs: {text: {type: string}}\ntemplate: '{{ text }}'\n"
                    "model: {backend: echo}\ntests:\n  - {input: {text: hello}, expect: {contains: hello}}\n")
    bad = [tmp_path / "bad1.yaml", tmp_path / "bad2.yaml"]
    bad[0].write_text("version: 1\nname: x\nfoo: 1\n")
    bad[1].write_text("version: 1\n")
    proc = echo_cli("test", str(bad[0]), str(good), str(bad[1]))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"promptdsl: error: {bad[0]}:3:1: unknown key 'foo' at the top level (at $.foo)",
        f"promptdsl: error: {bad[1]}:1:1: missing required key 'name' (at $.name)"]
    assert f"PASS {good}::test[0]: got 'hello'" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "1 passed, 0 failed; 2 specs not run (invalid, see above)"
    # a folder stands for its specs; one without tests says so; validate sums up
    (tmp_path / "none.yaml").write_text("version: 1\nname: none\nmodel: {backend: echo}\n")
    for b in bad:
        b.unlink()
    proc = echo_cli("test", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"PASS {good}::test[0]: got 'hello'", f"note: {tmp_path / 'none.yaml'} has no tests",
                                        "1 passed, 0 failed"]
    forced = tmp_path / "forced.yaml"  # cannot run without -T: named, and the other specs still run
    forced.write_text("version: 1\nname: forced\nmodel: {backend: echo}\ninputs: {text: {type: string}}\n"
                      "tool_choice: required\ntests:\n  - {input: {text: hi}, expect: hi}\n")
    proc = echo_cli("test", str(tmp_path))
    assert proc.returncode == 2 and "forced.yaml:5:1: tool_choice 'required' needs a tool" in proc.stderr
    assert f"PASS {good}::test[0]" in proc.stdout and proc.stdout.endswith("; 1 spec not run (invalid, see above)\n")
    forced.unlink()
    proc = echo_cli("test", str(tmp_path), "--json")  # for CI: one object per test, nothing else on stdout
    assert proc.returncode == 0 and [json.loads(line) for line in proc.stdout.splitlines()] == [
        {"spec": str(good), "test": 0, "name": None, "passed": True, "detail": "got 'hello'", "value": "hello"}]
    proc = echo_cli("validate", str(tmp_path), str(good))  # named twice: checked once
    assert proc.returncode == 0 and proc.stdout.count("ok: ") == 2 and proc.stdout.endswith("2 ok, 0 invalid\n")
    (tmp_path / "empty").mkdir()
    proc = echo_cli("validate", str(tmp_path / "empty"))
    assert proc.returncode == 2 and proc.stderr == f"promptdsl: error: {tmp_path / 'empty'}: a folder with no spec files (*.yaml, *.yml)\n"
