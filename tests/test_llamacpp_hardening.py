"""The llamacpp plugin against hostile specs and machines: grammars llama.cpp refuses, thread and
context sizes, a spec's model file and its chat template, cgroup CPU quotas, models freed when
their backends close, empty stop strings, and doctor with a bad thread setting.

Tests without a mark run on a stand-in for ``llama_cpp.Llama``; those marked ``model`` load the
embedded model."""

from __future__ import annotations

import contextlib
import gc
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promptdsl_llamacpp as plugin
import pytest
from promptdsl_llamacpp import LlamaCppBackend, cpu_flags
from test_llamacpp_settings import RecordingLlama as FakeLlama

from promptdsl import cpu, doctor, registry, templates
from promptdsl.cli import main
from promptdsl.errors import BackendError, InputError, SpecError
from promptdsl.grammar import MAX_COUNT, GrammarError, _counted, grammar_for
from promptdsl.loader import loads_spec
from promptdsl.prompt import Message, Prompt
from promptdsl.runner import Runner, check_options

SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"
ZEN3 = "flags\t\t: fpu sse4_2 avx avx2 fma f16c\n"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeLlama]]:
    """No real model: every load makes a FakeLlama; the process's model and backend caches start empty."""
    import llama_cpp

    FakeLlama.made = []
    monkeypatch.setattr(llama_cpp, "Llama", FakeLlama)
    monkeypatch.setattr(plugin, "_models", {})
    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.delenv(plugin.THREADS_ENV, raising=False)
    monkeypatch.delenv("PROMPTDSL_READ_DIRS", raising=False)
    yield FakeLlama


def spec_text(model: str = "", *, options: str = "", output: str = "{type: text}") -> str:
    lines = ["version: 1", "name: t", "mode: completion", "inputs: {text: {type: string}}", "template: '{{ text }}'"]
    if model or options:
        lines.append("model:")
        if model:
            lines.append(f"  model: {model}")
        if options:
            lines.append(f"  options: {options}")
    lines.append(f"output: {output}")
    return "\n".join(lines) + "\n"


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- #1 grammars llama.cpp takes


def _as_regex(fragment: str) -> str:
    """A grammar fragment over the atom ``x`` as a Python regex (GBNF's counts and groups are regex's)."""
    return fragment.replace(" ", "")


@pytest.mark.parametrize(("low", "high"), [(0, None), (3, 3), (7, 9), (7, None), (10, 25), (21, 21), (30, 31)])
def test_large_lower_bounds_keep_their_meaning_in_blocks(monkeypatch: pytest.MonkeyPatch, low: int,
                                                         high: int | None) -> None:
    import promptdsl.grammar as grammar

    monkeypatch.setattr(grammar, "MAX_COUNT", 3)  # blocks of 3, so small counts show the shape
    fragment = _counted("x", low, high)
    assert all(int(n) <= 3 for n in re.findall(r"\{(\d+)", fragment))
    top = (high if high is not None else low + 10) + 3
    for n in range(top):
        expected = low <= n and (high is None or n <= high)
        assert (re.fullmatch(_as_regex(fragment), "x" * n) is not None) is expected, (fragment, n)


@pytest.mark.parametrize("schema", [
    {"type": "string", "minLength": 2001},
    {"type": "string", "minLength": 5000, "maxLength": 6000},
    {"type": "array", "minItems": 3_000_000, "items": {"type": "array", "minItems": 3_000_000}},
    {"type": "string", "minLength": 3000, "pattern": "^[a-z]+$"},
])
def test_no_repetition_count_llama_cpp_refuses(schema: dict[str, Any]) -> None:
    text = grammar_for(None, schema, " ")
    counts = [int(n) for n in re.findall(r"\{(\d+)", text)]
    assert counts and max(counts) <= MAX_COUNT < 2000


def test_a_nul_cannot_reach_a_grammar() -> None:
    with pytest.raises(GrammarError, match="NUL"):
        grammar_for(["yes\0no", "maybe"], None, "")
    with pytest.raises(GrammarError, match="NUL"):
        grammar_for(["yes"], None, "\0")
    # A property name or an enum value is written as JSON text, where a NUL is the escape \u0000.
    text = grammar_for(None, {"type": "object", "properties": {"a\0": {"enum": ["b\0"]}}, "required": ["a\0"]}, "")
    assert "\0" not in text


@pytest.mark.parametrize("pattern", ["^[ab\0]+$", "^[ab\n]+$", "^[a\x7fb]+$"])
def test_a_pattern_class_with_control_characters_is_not_copied_into_the_grammar(pattern: str) -> None:
    text = grammar_for(None, {"type": "string", "maxLength": 10, "pattern": pattern}, "")
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text)  # (newlines only between rules)
    assert "[ab" not in text and "[a\x7f" not in text  # decoded as any JSON string, checked after
    assert "[a-z]" in grammar_for(None, {"type": "string", "maxLength": 9, "pattern": "^[a-z]+$"}, "")  # plain: kept


def test_a_choice_with_a_nul_is_a_spec_error_at_validate_time() -> None:
    with pytest.raises(SpecError) as err:
        loads_spec(spec_text(output='{type: choice, choices: ["yes\\0no", maybe], method: constrain}'))
    assert err.value.path == ("output", "choices", 0) and err.value.exit_code == 2


def test_a_grammar_the_plugin_cannot_build_is_an_exit_2_error() -> None:
    with pytest.raises(BackendError) as err:
        plugin._grammar(object(), plugin.Constraint(choices=("a\0b",)), "")  # type: ignore[arg-type]
    assert err.value.exit_code == 2 and "cannot limit decoding to these choices" in str(err.value)


# ---------------------------------------------------------------------------- the grammar check without a stderr

REFUSED, TAKEN = 'root ::= "a"{3000,}\n', 'root ::= "a"\n'


@pytest.fixture
def parser(monkeypatch: pytest.MonkeyPatch) -> Any:
    """llama.cpp's grammar parser, faked: it prints to fd 2 as the C code does (nothing when fd 2 is
    closed), and refuses REFUSED. Returns a stand-in model for ``_grammar_problem``."""
    import os
    from types import SimpleNamespace

    import llama_cpp

    def init_grammar(vocab: Any, text: bytes, root: bytes) -> int:
        refused = text.decode() == REFUSED
        # llama.cpp's parse(): fprintf(stderr, "%s: error parsing grammar: %s\n\n%s\n", ...); the
        # ticks stand for what other threads write to fd 2 meanwhile.
        printed = f"tick\nparse: error parsing grammar: too many repetitions\n\n{REFUSED}\ntock\n" if refused else "tick\n"
        with contextlib.suppress(OSError):  # fprintf to a closed stderr
            os.write(2, printed.encode())
        return 0 if refused else 1

    monkeypatch.setattr(llama_cpp, "llama_sampler_init_grammar", init_grammar)
    monkeypatch.setattr(llama_cpp, "llama_sampler_free", lambda sampler: None)
    monkeypatch.setattr(plugin, "_log_callback", object())  # llama.cpp's log is routed already
    return SimpleNamespace(llm=SimpleNamespace(_model=SimpleNamespace(vocab=None)))


def test_the_grammar_check_works_when_sys_stderr_is_none(parser: Any, monkeypatch: pytest.MonkeyPatch,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stderr", None)  # pythonw, a daemon, or 2>&- at start-up
    assert plugin._grammar_problem(parser, REFUSED) == "too many repetitions"
    assert capfd.readouterr().err == "tick\ntock\n"  # the parser's lines stay off fd 2, other threads' do not
    assert plugin._grammar_problem(parser, TAKEN) is None
    assert capfd.readouterr().err == "tick\n"  # not the parser's: written again to fd 2 itself


def test_the_grammar_check_works_when_file_descriptor_2_is_closed(parser: Any, monkeypatch: pytest.MonkeyPatch,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    import os

    monkeypatch.setattr(sys, "stderr", None)
    saved = os.dup(2)
    os.close(2)  # 2>&-: nothing to redirect or to write again to
    try:
        problems = [plugin._grammar_problem(parser, REFUSED), plugin._grammar_problem(parser, TAKEN)]
        still_closed = not _is_open(2)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    assert problems == ["it does not parse", None] and still_closed
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(("data", "left"), [
    # llama.cpp quotes the grammar from its first character in the message: the copy after the blank line goes
    (b"a\nparse: error parsing grammar: expecting name at !root ::= x\n\n!root ::= x\n\nb\n", b"a\n\nb\n"),
    (b"parse: error parsing grammar: bad\n\n!root ::= x\n", b""),
    (b"a\nparse: error parsing grammar: bad\n\n!root ::=", b"a\n"),  # cut short: the rest is the parser's
    (b"only other threads\n", b"only other threads\n"),
])
def test_only_the_parsers_message_is_kept_off_stderr(data: bytes, left: bytes) -> None:
    assert plugin._without_parser_message(data, b"!root ::= x") == left


def _is_open(fd: int) -> bool:
    import os

    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("stream", [None, "closed", "no-methods"])
def test_llama_cpps_verbose_log_needs_no_working_stderr(monkeypatch: pytest.MonkeyPatch, stream: str | None) -> None:
    import io

    import llama_cpp

    callbacks: list[Any] = []
    monkeypatch.setattr(plugin, "_log_callback", None)
    monkeypatch.setattr(plugin, "_log_verbose", [False])
    monkeypatch.setattr(llama_cpp, "llama_log_callback", lambda function: function)
    monkeypatch.setattr(llama_cpp, "llama_log_set", lambda function, data: callbacks.append(function))
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", {None: None, "closed": closed, "no-methods": object()}[stream])
    plugin._quiet_log(verbose=True)
    callbacks[0](2, b"llama.cpp says hello\n", None)  # lost, without an exception in llama.cpp's callback


def test_llama_cpps_verbose_log_reaches_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import llama_cpp

    callbacks: list[Any] = []
    monkeypatch.setattr(plugin, "_log_callback", None)
    monkeypatch.setattr(plugin, "_log_verbose", [False])
    monkeypatch.setattr(llama_cpp, "llama_log_callback", lambda function: function)
    monkeypatch.setattr(llama_cpp, "llama_log_set", lambda function, data: callbacks.append(function))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    plugin._quiet_log(verbose=True)
    callbacks[0](2, b"hello\n", None)
    assert sys.stderr.getvalue() == "hello\n"


# ---------------------------------------------------------------------------- #2 threads


def test_thread_counts_have_a_maximum(fake: type[FakeLlama], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="'n_threads': 10000 is greater than the maximum of 512") as err:
        registry.get_backend("llamacpp", None, {"n_threads": 10000})
    assert err.value.exit_code == 2 and fake.made == []
    monkeypatch.setenv(plugin.THREADS_ENV, "10000")
    with pytest.raises(BackendError, match="must be a positive integer of at most 512") as err:
        LlamaCppBackend(None, {})
    assert err.value.exit_code == 2


def test_a_spec_gets_at_most_the_usable_cores(fake: type[FakeLlama], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "cpu_count", lambda: 2)
    spec = loads_spec(spec_text(options="{n_threads: 10000}"), base_dir=tmp_path)
    Runner(spec)
    assert fake.made[-1].kwargs["n_threads"] == 2 and fake.made[-1].kwargs["n_threads_batch"] == 2
    Runner(loads_spec(spec_text(options="{n_threads: 1}"), base_dir=tmp_path))
    assert fake.made[-1].kwargs["n_threads"] == 1  # fewer than the cores: as the spec says
    Runner(spec, options={"n_threads": 3})  # the user's own number (-o) is theirs
    assert fake.made[-1].kwargs["n_threads"] == 3


# ---------------------------------------------------------------------------- #3 context size


def test_context_size_has_a_maximum(fake: type[FakeLlama]) -> None:
    with pytest.raises(BackendError, match="'n_ctx': 2000000 is greater than the maximum of 1048576"):
        registry.get_backend("llamacpp", None, {"n_ctx": 2_000_000})
    assert fake.made == []


def test_a_spec_may_not_ask_for_more_context_than_the_model_was_trained_with(
        fake: type[FakeLlama], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "_model_facts", lambda path: (8192, 23040))
    path = write_spec(tmp_path, spec_text(options="{n_ctx: 100000}"))
    spec = loads_spec(path.read_text(), file=str(path), base_dir=tmp_path)
    with pytest.raises(SpecError) as err:
        Runner(spec)
    assert err.value.exit_code == 2 and err.value.path == ("model", "options", "n_ctx")
    assert str(err.value).startswith(f"{path}:7:") and "trained with" in str(err.value)
    assert "-o n_ctx=100000" in str(err.value) and fake.made == []
    Runner(spec, options={"n_ctx": 100000})  # the command line raises it
    assert fake.made[-1].kwargs["n_ctx"] == 100000
    Runner(loads_spec(spec_text(options="{n_ctx: 8192}"), base_dir=tmp_path))  # the training context: fine
    assert fake.made[-1].kwargs["n_ctx"] == 8192
    monkeypatch.setattr(plugin, "_model_facts", lambda path: (2048, 23040))
    Runner(loads_spec(spec_text(options="{n_ctx: 4096}"), base_dir=tmp_path))  # the default is never refused
    assert fake.made[-1].kwargs["n_ctx"] == 4096


@pytest.mark.parametrize(("facts", "n_ctx", "message"), [
    ((1_048_576, 23040), 1_048_576, "would allocate 22.5 GiB of KV cache up front for model"),  # a patched file
    ((None, 23040), 200_000, "would allocate 4.3 GiB of KV cache"),  # a file that gives no training context
    ((None, None), 8192, "would allocate an unknown amount of KV cache"),
])
def test_a_spec_context_is_bounded_by_its_memory_not_only_by_what_the_file_claims(
        fake: type[FakeLlama], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        facts: tuple[int | None, int | None], n_ctx: int, message: str) -> None:
    """A spec may bring its own .gguf, whose context_length it wrote itself: patched to 1,048,576 it
    let a spec allocate 22.5 GiB."""
    monkeypatch.setattr(plugin, "_model_facts", lambda path: facts)
    spec = loads_spec(spec_text(options=f"{{n_ctx: {n_ctx}}}"), base_dir=tmp_path)
    with pytest.raises(SpecError, match=message) as err:
        Runner(spec)
    assert err.value.path == ("model", "options", "n_ctx") and fake.made == []
    assert f"-o n_ctx={n_ctx}" in str(err.value)
    Runner(loads_spec(spec_text(options="{n_ctx: 4096}"), base_dir=tmp_path))  # the default, always
    assert fake.made[-1].kwargs["n_ctx"] == 4096


@pytest.mark.model  # reads the model file's metadata with llama.cpp
def test_kv_bytes_per_token_of_the_embedded_model() -> None:
    """30 layers x 3 KV heads x (64 + 64) x 2 bytes: the 23 KB a token that docs/security.md gives."""
    assert plugin.kv_bytes_per_token(plugin.embedded_model_path()) == 23040


def test_the_cli_refuses_a_spec_context_in_one_line(fake: type[FakeLlama], tmp_path: Path, home: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(plugin, "_model_facts", lambda path: (8192, 23040))
    path = write_spec(tmp_path, spec_text(options="{n_ctx: 2000000}"))
    assert main(["run", str(path), "-i", "text=x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.options.n_ctx" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- AMX: a spec cannot force extra buffers


def test_a_spec_cannot_turn_extra_buffers_on_where_amx_crashes(fake: type[FakeLlama], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "cpu_flags", lambda cpuinfo=None: cpu_flags(SAPPHIRE_RAPIDS))
    spec = loads_spec(spec_text(options="{extra_bufts: true}"), base_dir=tmp_path)
    Runner(spec)
    assert fake.made[-1].model_params.use_extra_bufts is False  # counted as auto: off on AMX
    Runner(spec, options={"extra_bufts": True})  # only the user forces it
    assert fake.made[-1].model_params.use_extra_bufts is True
    monkeypatch.setattr(plugin, "cpu_flags", lambda cpuinfo=None: cpu_flags(ZEN3))
    monkeypatch.setattr(plugin, "system_info", lambda: "CPU : AVX2 = 1 |")
    assert LlamaCppBackend.spec_options(None, {"extra_bufts": True}) == {"extra_bufts": True}  # no AMX: as given


# ---------------------------------------------------------------------------- #4 the spec's model file


def test_a_spec_model_is_found_from_the_spec_folder(fake: type[FakeLlama], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "local.gguf").write_bytes(b"GGUF")
    path = write_spec(folder, spec_text("models/local.gguf"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from promptdsl.loader import load_spec

    runner = Runner(load_spec(path))
    assert fake.made[-1].kwargs["model_path"] == str((folder / "models" / "local.gguf").resolve())
    assert runner.backend.model_id == "local.gguf"


@pytest.mark.parametrize("exists", [True, False])
def test_a_spec_model_outside_its_folder_is_refused_alike(fake: type[FakeLlama], tmp_path: Path, exists: bool) -> None:
    outside = tmp_path / "private" / "secret.gguf"
    if exists:
        outside.parent.mkdir()
        outside.write_bytes(b"GGUF")
    from promptdsl.loader import load_spec

    for model in (str(outside), "../private/secret.gguf"):
        path = write_spec(tmp_path / "shared", spec_text(model))
        with pytest.raises(SpecError) as err:
            Runner(load_spec(path))
        message = str(err.value)
        assert message.startswith(f"{path}:7:") and "(at $.model.model)" in message
        assert "outside the spec's folder" in message and "PROMPTDSL_READ_DIRS" in message
    assert fake.made == []


def test_read_dirs_allow_a_model_and_the_user_model_is_unrestricted(fake: type[FakeLlama], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from promptdsl.loader import load_spec

    models = tmp_path / "models"
    models.mkdir()
    (models / "m.gguf").write_bytes(b"GGUF")
    spec = load_spec(write_spec(tmp_path / "shared", spec_text(str(models / "m.gguf"))))
    with pytest.raises(SpecError, match="outside the spec's folder"):
        Runner(spec)
    assert Runner(spec, model=str(models / "m.gguf")).backend.path == models / "m.gguf"  # --model: the user's
    monkeypatch.setenv("PROMPTDSL_READ_DIRS", str(models))
    assert Runner(spec).backend.path == (models / "m.gguf").resolve()


def test_a_spec_model_that_is_a_folder_or_missing_names_the_key(fake: type[FakeLlama], tmp_path: Path) -> None:
    from promptdsl.loader import load_spec

    (tmp_path / "d").mkdir()
    with pytest.raises(SpecError, match=r"model.model file '.*d' is not a regular file \(at \$\.model\.model\)"):
        Runner(load_spec(write_spec(tmp_path, spec_text("./d"))))
    (tmp_path / "m").write_bytes(b"GGUF")  # a bare word is an alias or a mistake, never a file found here
    with pytest.raises(BackendError, match=r"unknown model 'm' \(a server's model\? .*\(\./m for a file here\)"):
        Runner(load_spec(write_spec(tmp_path, spec_text("m"))))
    with pytest.raises(BackendError, match=r"unknown model 'smolm2' \(did you mean 'smollm2'\?\)"):
        Runner(load_spec(write_spec(tmp_path, spec_text("smolm2"))))
    with pytest.raises(SpecError, match=r"model.model file not found: '.*nope.gguf' \(at \$\.model\.model\)"):
        Runner(load_spec(write_spec(tmp_path, spec_text("nope.gguf"))))
    Runner(load_spec(write_spec(tmp_path, spec_text("smollm2"))))  # an alias is no file
    assert fake.made[-1].kwargs["model_path"] == str(plugin.embedded_model_path())


class _Vocab:
    """What the chat formatter reads from a Llama."""

    def __init__(self, template: str) -> None:
        self.metadata = {"tokenizer.chat_template": template}

    def token_eos(self) -> int:
        return 2

    def token_bos(self) -> int:
        return 1

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return {1: b"<s>", 2: b"</s>"}[tokens[0]]


def _fake_loaded(template: str) -> Any:
    model = plugin._LoadedModel.__new__(plugin._LoadedModel)
    model.llm = _Vocab(template)
    model.path = Path("hostile.gguf")
    return model


CHAT = Prompt(mode="chat", messages=(Message("system", "Be brief."), Message("user", "Hi <b>")))


def test_a_looping_chat_template_stops_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "RENDER_SECONDS", 0.3)
    model = _fake_loaded("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
                         "{{ messages[0].content }}")
    with pytest.raises(BackendError) as err:
        model.prompt_text(CHAT)
    assert err.value.exit_code == 2
    assert "the chat template of model hostile.gguf: rendering took longer than 0.3 s" in str(err.value)


@pytest.mark.parametrize("template", [
    # Hugging Face habits: trimmed blocks, loop controls, tojson with indent, tools is none, raise_exception
    "{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}\n"
    "<|{{ m['role'] }}|>\n{{ m['content'] | trim }}{{ eos_token }}\n{% endfor %}"
    "{% if tools is not none %}{{ tools | tojson(indent=2) }}{% endif %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    "{{ bos_token }}{% for m in messages %}{% if loop.index > 5 %}{% break %}{% endif %}"
    "{{ m.role | upper }}: {{ m.content }}\n{% endfor %}{{ {'a': [1, 'b']} | tojson }}",
    "{% if messages[0]['role'] != 'system' %}{{ raise_exception('needs a system message') }}{% endif %}"
    "{% for m in messages %}{{ m['content'] }}{% endfor %}",
])
def test_the_bounded_chat_template_renders_what_llama_cpp_python_rendered(template: str) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    messages: Any = [m.to_dict() for m in CHAT.messages]
    theirs = Jinja2ChatFormatter(template=template, eos_token="</s>", bos_token="<s>")(messages=messages).prompt
    assert _fake_loaded(template).prompt_text(CHAT) == theirs


def test_raise_exception_in_a_chat_template_is_a_clear_error() -> None:
    model = _fake_loaded("{{ raise_exception('Conversation roles must alternate') }}")
    with pytest.raises(BackendError, match=r"chat template of model hostile\.gguf: template error: Conversation roles"):
        model.prompt_text(CHAT)


# ---------------------------------------------------------------------------- #5 cgroup CPU quota


def _fake_root(tmp_path: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text(cgroup, encoding="utf-8")
    (tmp_path / "proc" / "self" / "mountinfo").write_text(mountinfo, encoding="utf-8")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="ascii")
    return tmp_path


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = ("31 23 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n"
             "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n"
             "33 31 0:30 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n")


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, "0::/kubepods/pod1/c1\n", V2_MOUNT, {
        "sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "max 100000\n",
        "sys/fs/cgroup/kubepods/pod1/cpu.max": "150000 100000\n",  # the pod's limit binds its containers
        "sys/fs/cgroup/kubepods/cpu.max": "max 100000\n",
    })
    assert cpu.cpu_quota(root) == 1.5


def test_cgroup_v2_without_a_quota(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, "0::/\n", V2_MOUNT, {"sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert cpu.cpu_quota(root) is None
    assert cpu.cpu_quota(tmp_path / "missing") is None  # not Linux


def test_cgroup_v1_quota_in_a_container(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path; the container sees that cgroup mounted as its root.
    cgroup = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
    root = _fake_root(tmp_path, cgroup, V1_MOUNTS, {
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "100000\n",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })
    assert cpu.cpu_quota(root) == 1.0
    (tmp_path / "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us").write_text("-1\n", encoding="ascii")
    assert cpu.cpu_quota(root) is None


def test_threads_and_doctor_follow_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "affinity_cpus", lambda: 8)
    monkeypatch.setattr(cpu, "cpu_quota", lambda root=None: 1.5)
    assert cpu.usable_cpus() == 2 and plugin.cpu_count() == 2
    monkeypatch.setattr(plugin.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert plugin.default_threads() == 2
    assert "2 within its cgroup CPU quota of 1.5" in doctor._cores_line()
    monkeypatch.setattr(cpu, "cpu_quota", lambda root=None: 0.2)
    assert cpu.usable_cpus() == 1  # at least one
    monkeypatch.setattr(cpu, "cpu_quota", lambda root=None: None)
    assert cpu.usable_cpus() == 8 and "quota" not in doctor._cores_line()


# ---------------------------------------------------------------------------- #6 models are freed


def test_the_last_backend_to_close_frees_the_model(fake: type[FakeLlama]) -> None:
    a = LlamaCppBackend(None, {"n_threads": 1})
    b = LlamaCppBackend(None, {"n_threads": 1})
    llm = a.llama
    assert b.llama is llm and len(plugin._models) == 1
    a.close()
    a.close()  # twice is fine
    assert llm.closed == 0 and len(plugin._models) == 1  # b still uses it
    b.close()
    assert llm.closed == 1 and plugin._models == {}
    assert b.llama is not llm and len(plugin._models) == 1  # used again: loaded again
    b.close()
    assert plugin._models == {}


def test_closing_during_a_call_frees_after_it(fake: type[FakeLlama]) -> None:
    backend = LlamaCppBackend(None, {"n_threads": 1})
    with backend._use() as model:
        backend.close()
        assert model.llm.closed == 0 and plugin._models == {}  # not under the running call
    assert model.llm.closed == 1


def test_registry_close_all_and_dropped_backends_let_go(fake: type[FakeLlama]) -> None:
    for n_ctx in (4096, 4097, 4098):
        registry.get_backend("llamacpp", None, {"n_ctx": n_ctx, "n_threads": 1})
        registry.close_all()
        assert plugin._models == {}
    assert all(m.closed == 1 for m in fake.made)
    LlamaCppBackend(None, {"n_threads": 1})  # never closed, dropped
    gc.collect()
    assert plugin._models == {}


# ---------------------------------------------------------------------------- #7 empty stop strings


@pytest.mark.parametrize("stop", ['""', '[""]', '[".", ""]'])
@pytest.mark.parametrize("where", ["output", "options"])
def test_an_empty_stop_string_is_a_spec_error(stop: str, where: str) -> None:
    text = spec_text(options=f"{{stop: {stop}}}") if where == "options" else spec_text(
        output=f"{{type: text, stop: {stop}}}")
    with pytest.raises(SpecError, match="should be non-empty") as err:
        loads_spec(text)
    assert err.value.exit_code == 2 and "stop" in err.value.path


@pytest.mark.parametrize("stop", ["", [""]])
def test_an_empty_stop_option_is_refused(stop: Any) -> None:
    with pytest.raises(InputError, match=r"^option 'stop': '' should be non-empty$") as err:
        check_options({"stop": stop})
    assert err.value.exit_code == 2


def test_the_plugin_never_passes_an_empty_stop_string() -> None:
    from promptdsl.backend import GenerationOptions

    assert plugin._stops(GenerationOptions(stop=("", "\n"))) == ["\n"]


# ---------------------------------------------------------------------------- #8 doctor and the thread variable


@pytest.mark.parametrize("value", ["abc", "²", "0", "99999999999999999999"])
def test_doctor_keeps_every_line_when_the_thread_variable_is_bad(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(plugin.THREADS_ENV, value)
    lines = dict(LlamaCppBackend.diagnostics())
    assert {"llama-cpp-python", "llama.cpp system info", "extra_bufts (auto)", "device", "embedded model"} <= set(lines)
    assert lines["threads"].startswith("none: $PROMPTDSL_LLAMACPP_THREADS must be a positive integer")
    report = doctor.diagnose(decode=False)
    assert not any("diagnostics failed" in p for p in report.problems)
    with pytest.raises(BackendError, match="must be a positive integer") as err:
        plugin.LoadSettings.from_options({})  # "²" is a digit to str.isdigit, not to int()
    assert err.value.exit_code == 2


def test_doctor_says_when_the_thread_variable_asks_for_more_than_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "cpu_count", lambda: 2)
    monkeypatch.setenv(plugin.THREADS_ENV, "8")
    assert "more than the 2 usable cores" in dict(LlamaCppBackend.diagnostics())["threads"]


# ---------------------------------------------------------------------------- on the real model


@pytest.mark.model
def test_llama_cpp_takes_every_split_grammar_and_refuses_bad_ones_quietly(
        llamacpp_backend: Any, capfd: pytest.CaptureFixture[str]) -> None:
    model = llamacpp_backend._model
    for schema in ({"type": "string", "minLength": 5000}, {"type": "array", "minItems": 3_000_000},
                   {"type": "string", "maxLength": 10_000_000}, {"type": "string", "pattern": "^[ab\0]+$"}):
        assert plugin._grammar_problem(model, grammar_for(None, schema, " ")) is None
    capfd.readouterr()
    problem = plugin._grammar_problem(model, 'root ::= "a"{3000,}\n')
    assert problem is not None and "number of repetitions exceeds sane defaults" in problem
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # llama.cpp's parser error and its dump of the grammar stay off stderr


@pytest.mark.model
def test_a_refused_grammar_is_an_error_not_a_crash(llamacpp_backend: Any, monkeypatch: pytest.MonkeyPatch,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    from promptdsl.backend import GenerationOptions

    monkeypatch.setattr(plugin, "grammar_for", lambda *a: 'root ::= "a"{3000,}\n')
    prompt = Prompt(mode="completion", text="Say a.")
    with pytest.raises(BackendError) as err:
        llamacpp_backend.complete(prompt, GenerationOptions(max_tokens=2), plugin.Constraint(json_schema={}))
    assert err.value.exit_code == 2
    assert "cannot limit decoding to the JSON schema: llama.cpp refuses its grammar (number of" in str(err.value)
    assert capfd.readouterr().err == ""
    assert llamacpp_backend.complete(prompt, GenerationOptions(max_tokens=2))  # the model still works


@pytest.mark.model
@pytest.mark.parametrize(("schema", "note"), [
    ("{type: string, minLength: 2001}", "minLength above llama.cpp's 2000"),
    ("{type: array, minItems: 3000000, items: {type: integer}}", "minItems far above it"),
    ('{type: string, maxLength: 10, pattern: "^[ab\\0]+$"}', "a NUL in a pattern class"),
])
def test_hostile_output_schemas_run_to_a_clean_end(schema: str, note: str, tmp_path: Path, home: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    text = spec_text(output=f"{{type: json, method: constrain, schema: {schema}, max_tokens: 6}}")
    path = write_spec(tmp_path, text)
    code = main(["run", str(path), "-i", "text=x", "-o", "n_threads=1"])
    err = capfd.readouterr().err
    assert code in (0, 1, 2), note  # a parse failure of a cut answer at most; never a signal
    assert err.count("\n") <= 1 and "parse:" not in err and "::=" not in err


@pytest.mark.model
def test_training_context_and_no_raw_llama_log(capfd: pytest.CaptureFixture[str]) -> None:
    assert plugin.training_context(plugin.embedded_model_path()) == 8192
    backend = LlamaCppBackend(None, {"n_ctx": 8448, "n_threads": 1})  # past training: the user's choice
    try:
        assert backend.context_length() == 8448
    finally:
        backend.close()
    assert "n_ctx_train" not in capfd.readouterr().err  # llama.cpp's warning stays off stderr without verbose


@pytest.mark.model
def test_the_embedded_chat_template_renders_as_before(llamacpp_backend: Any) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model = llamacpp_backend._model
    llm = model.llm
    theirs = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm.detokenize([llm.token_eos()], special=True).decode(),
        bos_token=llm.detokenize([llm.token_bos()], special=True).decode(),
    )(messages=[m.to_dict() for m in CHAT.messages]).prompt  # type: ignore[misc]
    assert model.prompt_text(CHAT) == theirs


@pytest.mark.model
def test_loading_and_closing_keeps_memory_bounded() -> None:
    from promptdsl.backend import GenerationOptions

    def rss_mb() -> float:
        return float(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

    before = plugin._models.copy()
    sizes = []
    for n_ctx in (3000, 3001, 3002, 3003):  # four load settings no other test uses
        backend = registry.get_backend("llamacpp", None, {"n_ctx": n_ctx, "n_threads": 1})
        assert isinstance(backend.complete(Prompt(mode="completion", text="Hi"), GenerationOptions(max_tokens=1)), str)
        backend.close()
        gc.collect()
        sizes.append(rss_mb())
    assert plugin._models.keys() == before.keys()  # none of the four stayed
    assert sizes[-1] - sizes[0] < 100, sizes  # each held ~100+ MB while it stayed loaded


@pytest.mark.parametrize(("backend", "model", "message"), [
    ("backend: llamacpp, ", "model: ../x.gguf", r":3:\d+: model\.model file .* is outside the spec's folder .*\(at \$\.model\.model\)"),
    ("backend: llamacpp, ", "options: {n_ctx: 50000}", r":3:\d+: n_ctx 50000 is more than the \d+ tokens of context .*\(at \$\.model\.options\.n_ctx\)"),
    ("", "model: ../x.gguf", r":3:\d+: model\.model file .* is outside the spec's folder"),  # the default backend's bounds
    ("", "options: {n_ctx: 50000}", r":3:\d+: n_ctx 50000 is more than the \d+ tokens of context"),
])
def test_validate_applies_the_spec_bounds_run_applies(
    backend: str, model: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`validate` said ok to a spec that `run` then refused."""
    monkeypatch.delenv("PROMPTDSL_BACKEND", raising=False)
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    folder = tmp_path / "sub"
    folder.mkdir()
    spec = folder / "s.yaml"
    spec.write_text(f"version: 1\nname: s\nmodel: {{{backend}{model}}}\ntemplate: hi\n", encoding="utf-8")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(message, err) and "\n" not in err, err


def test_the_embedded_model_has_one_name_however_it_is_given(fake: type[FakeLlama], tmp_path: Path) -> None:
    """By path it was 'SmolLM2-135M-Instruct.Q4_1.gguf', by alias 'smollm2': --resume took them for two models."""
    embedded = plugin.embedded_model_path()
    assert LlamaCppBackend(str(embedded), {}).model_id == "smollm2" == LlamaCppBackend(None, {}).model_id
    copy = tmp_path / "mine.gguf"
    copy.write_bytes(b"GGUF")
    assert LlamaCppBackend(str(copy), {}).model_id == "mine.gguf"


def test_another_backend_than_the_specs_starts_from_its_own_defaults(fake: type[FakeLlama], tmp_path: Path) -> None:
    """`-b llamacpp` on a spec written for openai used its `gpt-4o` as a model file and refused its base_url."""
    from promptdsl.loader import load_spec

    text = ("version: 1\nname: t\nmode: completion\ninputs: {text: {type: string}}\ntemplate: '{{ text }}'\n"
            "model: {backend: openai, model: gpt-4o, options: {base_url: 'http://127.0.0.1:9/v1', temperature: 0.5,"
            " max_tokens: 7}}\n")
    runner = Runner(load_spec(write_spec(tmp_path, text)), backend_name="llamacpp", options={"n_ctx": 1024})
    assert fake.made[-1].kwargs["model_path"] == str(plugin.embedded_model_path())  # the backend's own default
    assert runner.backend.options == {"n_ctx": 1024}  # the user's settings only
    assert (runner.generation.temperature, runner.generation.max_tokens) == (0.5, 7)  # the spec's still apply
    same = ("version: 1\nname: t\nmode: completion\ninputs: {text: {type: string}}\ntemplate: '{{ text }}'\n"
            "model: {backend: llamacpp, model: nope.gguf}\n")
    with pytest.raises(SpecError, match=r"model\.model file not found"):  # the spec's own backend: its model counts
        Runner(load_spec(write_spec(tmp_path, same, "same.yaml")), backend_name="llamacpp")


def test_a_huge_n_batch_is_refused_by_name_before_any_allocation() -> None:
    """-o n_batch=999999999999 reached llama-cpp-python: "MemoryError: Unable to allocate 175. PiB"."""
    from promptdsl.backend import check_options as check_backend_options

    with pytest.raises(BackendError) as info:
        check_backend_options("llamacpp", LlamaCppBackend.options_schema, {"n_batch": 999_999_999_999})
    assert info.value.exit_code == 2 and "option 'n_batch': 999999999999 is greater than the maximum of 65536" in str(
        info.value)
    check_backend_options("llamacpp", LlamaCppBackend.options_schema, {"n_batch": 65536})
