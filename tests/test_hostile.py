"""Hostile specs and bad input (issue 9): no secret leaves, nothing hangs, every failure is one line.

Each test is the minimal reproduction from the issue, kept as a regression test. Everything here
runs without a model: a local HTTP listener stands in for a server when a request must be seen.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from promptdsl import Backend, Capability, Constraint, GenerationOptions, Prompt, Runner, loads_spec
from promptdsl.cache import CachedRunner, ResultCache, stored
from promptdsl.cli import main
from promptdsl.compiler import Compiler
from promptdsl.errors import BackendError, InputError, SpecError, mask_secrets, quote, register_secret
from promptdsl.expect import check_expectation
from promptdsl.loader import RESERVED_INPUTS, load_spec
from promptdsl.outputs import ParseFailure, parse_output
from promptdsl.schema import RegexProblem, search
from promptdsl.spec import FromSpec, OutputSpec, OutputType
from promptdsl.templates import MAX_CHARS, TemplateFailure, render

ROOT = Path(__file__).resolve().parent.parent
BASE = "version: 1\nname: x\ninputs: {text: {type: string}}\n"


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_line_error(capsys: pytest.CaptureFixture[str], code: int, expected_code: int = 2) -> str:
    """The CLI's promise for bad input: the exit code, and exactly one 'promptdsl: error:' line."""
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptdsl: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ============================================================================ 1. secrets


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 401 to everything and remembers the Authorization headers it was sent."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        body = json.dumps({"error": {"message": "invalid api key", "type": "invalid_request_error"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)  # quick shutdown()
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


SECRET = "sk-test-SECRETkey1234567890abcdef"


@pytest.fixture
def clean_openai_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("OPENAI_") or key == "PROMPTDSL_TRUSTED_BASE_URLS":
            monkeypatch.delenv(key)
    monkeypatch.setenv("PROMPTDSL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def _remote_spec(tmp_path: Path, options: str) -> Path:
    return write(tmp_path, (
        "version: 1\nname: remote\ninputs: {q: {type: string}}\n"
        f"model: {{backend: openai, model: m, options: {{{options}}}}}\n"
    ))


def test_spec_base_url_never_receives_the_users_key(
    clean_openai_env: None, recorder: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`base_url` in a spec: the request goes out without the key, and the 401 says why and how to allow it."""
    spec = _remote_spec(tmp_path, f"base_url: '{recorder}', grammar: false, max_retries: 0")
    line = one_line_error(capsys, main(["run", str(spec), "-i", "q=hi"]))
    assert _Recorder.seen and all(SECRET not in h for h in _Recorder.seen)
    assert "was not sent" in line and "comes from the spec file" in line and "trusted_base_urls" in line
    assert SECRET not in line


def test_user_choices_send_the_key(
    clean_openai_env: None, recorder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-o base_url, OPENAI_BASE_URL and trusted_base_urls in the user config are the user's own decisions."""
    from promptdsl.registry import close_all

    spec = _remote_spec(tmp_path, "grammar: false, max_retries: 0")
    main(["run", str(spec), "-i", "q=hi", "-o", f"base_url={recorder}"])
    assert _Recorder.seen[-1] == f"Bearer {SECRET}"
    assert SECRET not in capsys.readouterr().err  # the 401 message masks it

    close_all()
    spec = _remote_spec(tmp_path, f"base_url: '{recorder}', grammar: false, max_retries: 0")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "openai.yaml").write_text(f"trusted_base_urls: ['{recorder}/']\n", encoding="utf-8")
    main(["run", str(spec), "-i", "q=hi"])
    assert _Recorder.seen[-1] == f"Bearer {SECRET}"
    close_all()


def test_environment_base_url_beats_the_spec(clean_openai_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from promptdsl_openai.config import resolve

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    settings = resolve({"base_url": FromSpec("http://evil.example/v1")})
    assert settings.base_url == "http://127.0.0.1:9/v1" and settings.api_key == SECRET


def test_spec_cannot_choose_the_key_variable(
    clean_openai_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value-123")
    spec = _remote_spec(tmp_path, "base_url: 'http://127.0.0.1:9/v1', api_key_env: AWS_SECRET_ACCESS_KEY")
    line = one_line_error(capsys, main(["run", str(spec), "-i", "q=hi"]))
    assert "refused" in line and "api_key_env" in line and "-o api_key_env=NAME" in line
    assert "aws-secret-value-123" not in line


@pytest.mark.parametrize(("options", "key"), [("api_key_env: AWS_SECRET_ACCESS_KEY", "api_key_env"),
                                              ("api_key: sk-in-the-file-123", "api_key")])
def test_validate_refuses_a_spec_choosing_the_key_where_it_stands(
    clean_openai_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: str, key: str
) -> None:
    """Not 'ok' from validate and then a refusal from every run: the same line, with the place in the file."""
    spec = _remote_spec(tmp_path, f"base_url: 'http://127.0.0.1:9/v1', {options}")
    line = one_line_error(capsys, main(["validate", str(spec)]))
    assert f"(at $.model.options.{key})" in line and f"{spec}:" in line and "sk-in-the-file" not in line


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-1"])
def test_non_finite_timeout_is_refused(clean_openai_env: None, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(ROOT / "specs" / "qa.yaml"), "-b", "openai", "-o", "base_url=http://127.0.0.1:9/v1",
                 "-o", f"timeout={value}", "-i", "question=hi"])
    line = one_line_error(capsys, code)
    assert "timeout" in line


@pytest.mark.parametrize(("text", "hidden"), [
    ("GET http://admin:hunter2@10.0.0.1/v1 failed", "hunter2"),
    ("key gsk_AbCdEf1234567890XyZabcDEF rejected", "AbCdEf1234567890XyZabcDEF"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 rejected", "abcdefghijklmnopqrstuvwxyz0123456789"),
    ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
    ("aws AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
    ("the server echoed sk-abc***wxyz", "abc***wxyz"),
    ("unknown key sk-1234567890abcdef1234", "1234567890abcdef1234"),  # a vendor's prefix: any case
    ("cannot connect to https://tok3nWithoutColon99@gw.example.com/v1", "tok3nWithoutColon99"),
])
def test_secrets_are_masked(text: str, hidden: str) -> None:
    masked = mask_secrets(text)
    assert hidden not in masked and "***" in masked


def test_short_keys_in_the_environment_and_registered_keys_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "ab12")
    register_secret("zz9z")
    err = BackendError("the server said: bad key ab12 (expected zz9z)", backend="x")
    assert "ab12" not in str(err) and "zz9z" not in str(err)


def test_a_registered_key_is_masked_in_any_case_and_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers echo keys upper-cased or cut ("...abc123..."): every backend's registered key, not only openai's."""
    monkeypatch.setenv("MY_PLUGIN_TOKEN", "EnvValue/With/Path")
    register_secret("Tok3nForAPlugin-987654", key=True)
    text = ("bad key TOK3NFORAPLUGIN-987654, or tok3nForA..., or ...Plugin-98...; "
            "env EnvValue/With/Path; a shared piece Path-and-more stays")
    masked = mask_secrets(text)
    for leak in ("tok3nforaplugin", "tok3nfora", "plugin-98", "envvalue"):
        assert leak not in masked.lower(), masked
    assert masked.count("***") == 4 and "Path-and-more stays" in masked  # env values are masked whole only
    # positions stay right where lower-casing changes a text's length ('İ'.lower() is two characters)
    assert mask_secrets("İ" * 14 + " bad key Tok3nForAPlug, retry later") == "İ" * 14 + " bad key ***, retry later"


def test_placeholders_and_settings_do_not_take_words_out_of_messages() -> None:
    """A placeholder key (local servers take any) or a header that is no secret is not a generated key:
    masked whole at most, never in pieces or in another case."""
    register_secret("sk-no-key-required", key=True)
    register_secret("EMPTY", key=True)
    register_secret("https://example.org/myapp")  # a header value (HTTP-Referer)
    text = "'city' is a required property; the label is empty; cannot connect to https://127.0.0.1:9/v1"
    assert mask_secrets(text) == text


@pytest.mark.parametrize("name", ["hf_smollm2_135m_instruct_q8.gguf", "pplx-mixtral-8x7b-instruct",
                                  "sk-learn-classifier-v2-final", "hf_emotion_classifier_v2.yaml"])
def test_file_and_model_names_with_a_vendor_prefix_are_not_keys(name: str) -> None:
    assert mask_secrets(f"model file not found: /tmp/models/{name}") == f"model file not found: /tmp/models/{name}"


def test_ordinary_names_are_not_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    text = ("model SmolLM2-135M-Instruct, file tweeteval-sentiment_validation_set.jsonl, max_tokens=16, grammar=false,"
            " sk-learn-style-names-are-words, hf_hub_download_and_cache,"
            " repo ssh://git@github.com/o/r")
    assert mask_secrets(text) == text


# ============================================================================ 2. resource bounds

TEMPLATE_BOMBS = [
    '{{ "a" * 10**10 }}',
    '{{ "%999999999d" % 1 }}',
    "{{ 2**100000 }}",
    "{{ text * 1000000000 }}",
    "{{ text|center(1000000000) }}",
    '{{ "{:>999999999}".format(1) }}',
    '{{ ("x" * 1000000).replace("x", "y" * 1000) }}',
    '{{ range(10)|join("x" * 10000000) }}',
    '{% set s = "a" * 10000000 %}{{ [s] * 100 }}',
    '{% set s = "a" * 1000000 %}{% set t = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}{{ t }}',
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    '{{ "x"|indent(10**9) }}',
    "{{ text.zfill(10**9) }}",
    "{{ lipsum(10**6) }}",
    '{{ ("a " * 1000000)|urlize }}',
    "{{ (range(30000)|batch(1)|list)|sum(start=[]) }}",
]

#: Lists cost memory per item, however short the items (1.8 GB before these limits). Run with a
#: smaller MAX_ITEMS: the same checks, found sooner.
LIST_BOMBS = [
    '{% set s = "a" * 16000000 %}{{ (s|list|batch(1)|list)|length }}',
    '{% set s = "a" * 16000000 %}{% set ns = namespace(l=[]) %}{% for i in range(100) %}'
    '{% set ns.l = ns.l + [s ~ i] %}{% endfor %}{{ ns.l|length }}',
    '{% set s = "ab " * 50000 %}{% set a = s.split() %}{% set b = s.split() %}{{ a|length }}',
    '{{ ("a" * 16000000)|unique|list|length }}',
]


@pytest.mark.parametrize("source", LIST_BOMBS)
def test_list_bombs_fail_fast(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("promptdsl.templates.MAX_ITEMS", 10_000)
    start = time.process_time()
    with pytest.raises(TemplateFailure, match=r"items|the joined list"):
        render(source, {"text": "hi"})
    assert time.process_time() - start < 3


@pytest.mark.parametrize("source", TEMPLATE_BOMBS)
def test_template_bombs_fail_fast(source: str) -> None:
    start = time.process_time()
    with pytest.raises(TemplateFailure):
        render(source, {"text": "hi"})
    assert time.process_time() - start < 3


def test_runaway_loops_stop_at_the_render_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    import promptdsl.templates as templates

    monkeypatch.setattr(templates, "RENDER_SECONDS", 0.3)
    for source in ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
                   "{% set xs = range(99999)|list %}{% for a in xs %}{% for b in xs %}{% endfor %}{% endfor %}",
                   # Filters that loop in Python, a test per item: 57 s before they ran on the clock.
                   '{{ ("a" * 16000000)|select("eq", "b")|list }}'):
        start = time.monotonic()
        with pytest.raises(TemplateFailure, match="longer than"):
            render(source, {})
        assert time.monotonic() - start < 10


def test_ordinary_templates_on_large_inputs_stay_fast() -> None:
    """The limits count what is made, not the worst case: a 2.4 MB document's first words, CRLF
    lines, and a list collected item by item with ``ns.l + [x]`` (quadratic before a fix)."""
    start = time.process_time()
    doc = "lorem " * 400_000
    assert render('{{ doc.split()[:3]|join(" ") }} {{ doc.split()|length }}', {"doc": doc}) == "lorem lorem lorem 400000"
    assert render("{{ doc.splitlines()|length }}", {"doc": "x\r\n" * 600_000}) == "600000"
    collect = "{% set ns = namespace(l=[]) %}{% for x in items %}{% set ns.l = ns.l + [x] %}{% endfor %}{{ ns.l|length }}"
    assert render(collect, {"items": [{"a": i} for i in range(5000)]}) == "5000"
    assert time.process_time() - start < 4


def test_ordinary_templates_still_work() -> None:
    out = render('{{ 2**100 }} {{ "%5d" % 3 }} {{ "a" ~ 1 }} {% for x in [1, 2] %}{{ loop.index }}/{{ loop.length }} '
                 '{% endfor %}{{ text|upper }} {{ "{:>4}".format(7) }} {{ ["a", "b"]|join(",") }}', {"text": "hi"})
    assert out == '1267650600228229401496703205376     3 a1 1/2 2/2 HI    7 a,b'
    assert len(render("{{ text }}", {"text": "x" * (MAX_CHARS - 10)})) == MAX_CHARS - 10
    items = render('{{ text.split()|select("ne", "b")|map("upper")|list }} {{ [1, 2] + [3] }} '
                   '{{ text.split(" ", 1) }} {{ "x\ny".splitlines()|length }} {{ text|list|unique|sort|join }} '
                   '{{ [3, 1, 2]|sort|first }} {{ [1, 2, 3]|sum }} {{ text.split()|batch(2)|list }}',
                   {"text": "a b c"})
    assert items == '["A", "C"] [1, 2, 3] ["a", "b c"] 2  abc 1 6 [["a", "b"], ["c"]]'  # lists print as JSON


def test_template_bomb_is_a_spec_error_at_the_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`validate` and `compile`: one SpecError line at file:line:col, quickly, even for the constant-folded form."""
    spec = write(tmp_path, BASE + "template: '{{ \"a\" * 10**10 }}'\nexamples: [{input: {text: a}, output: b}]\n")
    start = time.process_time()
    line = one_line_error(capsys, main(["validate", str(spec)]))
    assert time.process_time() - start < 5
    assert f"{spec}:4:1: template 'template'" in line and "the limit is" in line
    line = one_line_error(capsys, main(["compile", str(spec), "-i", "text=x"]))
    assert "the limit is" in line


@pytest.fixture
def quick_regex_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bound at 0.2 s instead of 1 s: the catastrophic patterns below run far longer either way."""
    import promptdsl.schema as schema

    monkeypatch.setattr(schema, "REGEX_SECONDS", 0.2)


@pytest.mark.usefixtures("quick_regex_clock")
def test_catastrophic_regexes_are_bounded() -> None:
    start = time.process_time()  # the regex clock counts CPU time (wall time varies with machine load)
    with pytest.raises(RegexProblem, match="took longer than"):
        search(r"^(a|aa)*$", "a" * 60 + "b")
    out = OutputSpec(type=OutputType.REGEX, pattern=r"^(a|aa)*$")
    with pytest.raises(ParseFailure, match="took longer than"):
        parse_output(out, "a" * 60 + "b")
    assert "took longer than" in (check_expectation({"matches": r"^(a|aa)*$"}, "a" * 60 + "b") or "")
    assert time.process_time() - start < 10


@pytest.mark.usefixtures("quick_regex_clock")
def test_catastrophic_input_pattern_is_an_input_error(tmp_path: Path) -> None:
    from promptdsl.inputs import validate_inputs

    spec = load_spec(write(tmp_path, "version: 1\nname: x\ninputs: {text: {type: string, pattern: '^(a|aa)*$'}}\n"))
    start = time.process_time()
    with pytest.raises(InputError, match="took longer than"):
        validate_inputs(spec, {"text": "a" * 60 + "b"})
    assert time.process_time() - start < 5


# ============================================================================ 3. $ref


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import urllib.request

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a $ref made a network request")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(("schema", "where", "why"), [
    ("{$ref: 'http://127.0.0.1:9/x'}", "$.inputs.text.$ref", "never fetched"),
    ("{$ref: 'file:///dev/zero'}", "$.inputs.text.$ref", "never fetched"),
    ("{$ref: '#/nope'}", "$.inputs.text.$ref", "nothing in the schema"),
    ("{type: object, properties: {a: {$ref: '#/$defs/missing'}}}", "$.inputs.text.properties.a.$ref", "nothing in"),
    # Loops that never step into the value: checking any value would recurse until Python gives up.
    ("{$ref: '#'}", "$.inputs.text.$ref", "references loop"),
    ("{$defs: {a: {$ref: '#/$defs/a'}}, $ref: '#/$defs/a'}", "$.inputs.text.$defs.a.$ref", "references loop"),
    ("{anyOf: [{type: string}, {$ref: '#'}]}", "$.inputs.text.anyOf[1].$ref", "references loop"),
    ("{$defs: {a: {allOf: [{$ref: '#/$defs/b'}]}, b: {not: {$ref: '#/$defs/a'}}}, $ref: '#/$defs/a'}",
     "$.inputs.text.$defs.b.not.$ref", "references loop"),
])
def test_refs_never_fetch_and_unresolvable_refs_are_spec_errors(
    no_network: None, tmp_path: Path, schema: str, where: str, why: str
) -> None:
    path = write(tmp_path, f"version: 1\nname: x\ninputs: {{text: {schema}}}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert why in str(info.value) and f"(at {where})" in str(info.value)
    assert info.value.line == 3


def test_recursive_schemas_that_step_into_the_value_still_work() -> None:
    """A tree: ``$ref`` under ``items`` checks a smaller part each time, so it ends."""
    from promptdsl.inputs import validate_inputs

    spec = loads_spec("version: 1\nname: x\ninputs: {t: {type: array, items: {$ref: '#'}}}\n")
    assert validate_inputs(spec, {"t": [[], [[]]]}) == {"t": [[], [[]]]}
    deep: list[Any] = []
    for _ in range(900):
        deep = [deep]
    with pytest.raises(InputError, match="input 't' nests too deeply to check against its schema"):
        validate_inputs(spec, {"t": deep})


def test_unique_items_is_checked_in_one_pass() -> None:
    """jsonschema compares every pair when items cannot be sorted: 60,000 mixed items took minutes."""
    from promptdsl.inputs import validate_inputs

    spec = loads_spec("version: 1\nname: x\ninputs: {xs: {type: array, uniqueItems: true}}\n")
    mixed = [v for i in range(30_000) for v in (i, f"s{i}")]
    start = time.process_time()
    assert validate_inputs(spec, {"xs": mixed})["xs"] is mixed
    assert time.process_time() - start < 5
    for same in ([1, 1.0], [{"a": [1]}, {"a": [1.0]}], ["x", 2, "x"]):  # JSON Schema's equality
        with pytest.raises(InputError, match="has non-unique elements"):
            validate_inputs(spec, {"xs": same})
    assert validate_inputs(spec, {"xs": [1, True, 0, False, None, "", [], {}]})  # all different


def test_data_is_json_as_the_standard_has_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's reader takes NaN and Infinity (results files could not carry them on) and keeps the
    last of two equal keys silently: a row with either is a bad row, named."""
    from promptdsl.datafile import DataFile

    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "text": "b"}\n{"text": NaN}\n{"n": -Infinity}\n{"text": "ok"}\n', encoding="utf-8")
    rows = list(DataFile(data).rows())
    assert [r.error for r in rows] == [
        "invalid JSON: duplicate key 'text'", "invalid JSON: NaN is not a JSON number",
        "invalid JSON: -Infinity is not a JSON number", None,
    ]
    spec = write(tmp_path, BASE)
    for stdin in ('{"text": Infinity}', '{"text": "a", "text": "b"}'):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        assert "promptdsl: error: stdin: invalid JSON: " in one_line_error(capsys, main(["compile", str(spec), "-i", "-"]))
    obj = write(tmp_path, "version: 1\nname: x\ninputs: {cfg: {type: object}}\ntemplate: '{{ cfg }}'\n", "obj.yaml")
    for flag in ('cfg={"a": 1, "a": 2}', "cfg=NaN"):  # -i, @file and CSV cells are read alike
        assert "is not of type 'object'" in one_line_error(capsys, main(["compile", str(obj), "-i", flag]))
    examples = tmp_path / "ex.jsonl"
    examples.write_text('{"input": {"text": "a"}, "output": "x", "output": "y"}\n', encoding="utf-8")
    with pytest.raises(SpecError, match="duplicate key 'output'"):
        load_spec(write(tmp_path, BASE + "examples_file: ex.jsonl\n", "withfile.yaml"))


def test_local_refs_still_work(no_network: None, tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, (
        "version: 1\nname: x\ninputs: {text: {$defs: {s: {type: string, minLength: 2}}, $ref: '#/$defs/s'}}\n"
        "examples: [{input: {text: ab}, output: y}]\n"
    )))
    assert spec.inputs["text"]["$ref"] == "#/$defs/s"
    with pytest.raises(SpecError, match=r"should be non-empty|too short"):
        loads_spec(BASE.replace("{type: string}", "{$defs: {s: {minLength: 2}}, $ref: '#/$defs/s'}")
                   + "examples: [{input: {text: a}, output: y}]\n")


# ============================================================================ 4. special and huge files


def test_devices_are_read_with_a_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.process_time()
    line = one_line_error(capsys, main(["validate", "/dev/zero"]))
    assert "too large" in line
    spec = write(tmp_path, "version: 1\nname: x\nextends: /dev/zero\n")
    assert "must name a spec file" in one_line_error(capsys, main(["validate", str(spec)]))
    spec = write(tmp_path, "version: 1\nname: x\nextends: zero.yaml\n")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    assert "is outside the spec's folder" in one_line_error(capsys, main(["validate", str(spec)]))
    line = one_line_error(capsys, main(["compile", str(ROOT / "specs" / "qa.yaml"), "-i", "question=@/dev/zero"]))
    assert "larger than 16 MiB" in line
    assert time.process_time() - start < 10


def test_validating_a_folder_reads_no_link_out_of_it_and_no_fifo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A repository's `specs/x.yaml -> /etc/shadow` printed the file's lines as "unknown key" errors in
    `promptdsl validate specs/`; a FIFO named f.yaml was silently dropped (or would hang a read)."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$Zq3tXj1u$Ab9cQw8Lm2Np4Rs6Tu8Vw0Xy2Za4Bc6De8Fg0Hi2Jk4Lm6: 1\n", encoding="utf-8")
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "a.yaml").write_text("version: 1\nname: a\n", encoding="utf-8")
    (folder / "x.yaml").symlink_to(secret)
    (folder / "same.yaml").symlink_to(folder / "a.yaml")  # a link inside the folder is read (once)
    (folder / "loop.yaml").symlink_to(folder / "loop.yaml")  # links to nothing are skipped, as are hidden files:
    (folder / ".#a.yaml").symlink_to("user@host.1234:1700000000")  # Emacs's lock beside a file being edited
    (folder / ".b.yaml").write_text("not: [a spec\n", encoding="utf-8")
    os.mkfifo(folder / "f.yaml")
    code = main(["validate", str(folder)])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    assert "Zq3tXj1u" not in out + err and "Ab9cQw8" not in out + err
    assert err.splitlines() == [
        f"promptdsl: error: {folder / 'f.yaml'}: not a regular file (a FIFO or a device), so not read",
        f"promptdsl: error: {folder / 'x.yaml'}: a link to a file outside '{folder}', so not read (name the file "
        "itself to read it)",
    ]
    assert out.splitlines() == [f"ok: {folder / 'a.yaml'} (0 examples, 0 tests, chat mode, output text)",
                                "1 ok, 2 invalid"]
    main(["validate", str(folder / "x.yaml")])  # named by the user: read (and refused as a spec)
    assert "unknown key" in capsys.readouterr().err

    from promptdsl_tui.specs import discover

    entries = {entry.path.name: entry for entry in discover([folder], tmp_path)}
    assert entries["a.yaml"].spec is not None and "same.yaml" not in entries
    assert "outside" in str(entries["x.yaml"].error) and "Zq3tXj1u" not in str(entries["x.yaml"].error)
    assert "not a regular file" in str(entries["f.yaml"].error)
    assert not {"loop.yaml", ".#a.yaml", ".b.yaml"} & set(entries)


def test_a_spec_reads_only_regular_files_in_its_own_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``extends`` and ``examples_file`` may not reach your other files (a spec could send them
    to a server it names), nor a FIFO or a device, whose opening waits forever."""
    import os

    private = tmp_path / "private"
    private.mkdir()
    (private / "diary.jsonl").write_text('{"input": {"text": "PIN 4321"}, "output": "x"}\n', encoding="utf-8")
    (private / "base.yaml").write_text("version: 1\nname: base\n", encoding="utf-8")
    shared = tmp_path / "shared"
    shared.mkdir()
    head = "version: 1\nname: x\ninputs: {text: {type: string}}\n"
    cases = {
        "up.yaml": head + "examples_file: ../private/diary.jsonl\n",
        "abs.yaml": head + f"examples_file: {private / 'diary.jsonl'}\n",
        "ext.yaml": "version: 1\nname: x\nextends: ../private/base.yaml\n",
        "link.yaml": head + "examples_file: link.jsonl\n",
    }
    (shared / "link.jsonl").symlink_to(private / "diary.jsonl")
    for name, text in cases.items():
        (shared / name).write_text(text, encoding="utf-8")
        line = one_line_error(capsys, main(["validate", str(shared / name)]))
        assert "is outside the spec's folder" in line and "PIN" not in line, name
        assert "PROMPTDSL_READ_DIRS" in line
    missing = head + "examples_file: ../private/nothing.jsonl\n"  # outside says nothing of existence
    (shared / "probe.yaml").write_text(missing, encoding="utf-8")
    assert "is outside the spec's folder" in one_line_error(capsys, main(["validate", str(shared / "probe.yaml")]))

    monkeypatch.setenv("PROMPTDSL_READ_DIRS", str(private))  # the user allows that folder
    assert main(["validate", str(shared / "up.yaml"), str(shared / "ext.yaml"), str(shared / "link.yaml")]) == 0
    capsys.readouterr()

    os.mkfifo(shared / "fifo.jsonl")
    (shared / "fifo.yaml").write_text(head + "examples_file: fifo.jsonl\n", encoding="utf-8")
    os.mkfifo(shared / "base.yaml")
    (shared / "fifobase.yaml").write_text("version: 1\nname: x\nextends: base.yaml\n", encoding="utf-8")
    for name in ("fifo.yaml", "fifobase.yaml"):
        assert "is not a regular file" in one_line_error(capsys, main(["validate", str(shared / name)])), name


def test_foreign_file_contents_are_not_echoed(tmp_path: Path) -> None:
    """A base full of 'secrets' in keys: the message quotes at most a short, escaped piece of one."""
    write(tmp_path, '"root:$6$saltsaltsalt$hashhashhashhashhashhashhashhash:19000:0:99999:7:::\\nnext": 1\n', "base.yaml")
    spec = write(tmp_path, "version: 1\nname: x\nextends: base.yaml\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    text = str(info.value)
    assert "\n" not in text and "99999:7" not in text and "unknown key" in text


@pytest.mark.parametrize(("value", "shown"), [
    ("a\nb", "'a\\nb'"), ("\x1b[31mred", "'\\x1b[31mred'"), ("nul\x00", "'nul\\x00'"), ("x" * 500, "'" + "x" * 59 + "…'"),
])
def test_quote_escapes_and_caps(value: str, shown: str) -> None:
    assert quote(value) == shown


# ============================================================================ 7. the cache is disposable

CHOICE = 'version: 1\nname: c\nmode: completion\ninputs: {text: {type: string}}\n' \
    'template: "Text: {{ text }}\\nLabel:"\noutput: {type: choice, choices: [Yes, No]}\n'


class Scoring(Backend):
    name = "scoring"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CHAT, Capability.COMPLETION, Capability.STREAM, Capability.SCORE}
    )

    def __init__(self) -> None:
        super().__init__("m", {})
        self.calls = 0

    def stream(self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None) -> Iterator[str]:
        yield "Yes"

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        self.calls += 1
        return [-1.0, -2.0]


def _broken_caches(tmp_path: Path) -> dict[str, Path]:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    wrong = tmp_path / "wrong.sqlite3"
    with sqlite3.connect(wrong) as db:
        db.execute("CREATE TABLE results (k TEXT, v TEXT)")
    home_file = tmp_path / "home-is-a-file"
    home_file.write_text("x")
    return {"garbage": garbage, "wrong schema": wrong, "home is a file": home_file / "cache" / "results.sqlite3"}


def test_broken_cache_files_warn_once_and_the_run_goes_on(tmp_path: Path) -> None:
    for what, path in _broken_caches(tmp_path).items():
        problems: list[str] = []
        cache = ResultCache(path, on_problem=problems.append)
        backend = Scoring()
        cached = CachedRunner(Runner(loads_spec(CHOICE), backend), cache)
        assert cached.run({"text": "a"}).value == "Yes" and cached.run({"text": "a"}).value == "Yes"
        assert backend.calls == 2, what
        assert len(problems) == 1 and str(path) in problems[0] and "--no-cache" in problems[0], what
        cache.close()


def test_unusable_home_runs_without_a_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PROMPTDSL_HOME is a file, or the cache file is a directory: no cache, one warning, no exception."""
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("PROMPTDSL_HOME", str(tmp_path / "file"))
    problems: list[str] = []
    cache = ResultCache(on_problem=problems.append)
    assert not cache.enabled and len(problems) == 1 and cache.get("k") is None
    cache.put("k", {"value": 1})
    (tmp_path / "dir.sqlite3").mkdir()
    cache = ResultCache(tmp_path / "dir.sqlite3", on_problem=problems.append)
    assert not cache.enabled and len(problems) == 2 and len(cache) == 0


def test_read_only_cache_file_turns_off_at_the_first_write(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    ResultCache(path).close()
    problems: list[str] = []
    cache = ResultCache(path, on_problem=problems.append)
    cache._db.execute("PRAGMA query_only = ON")  # type: ignore[union-attr]  # what a read-only file does
    cache.put("k", {"value": 1})
    assert not cache.enabled and len(problems) == 1 and "cannot write" in problems[0]
    assert cache.get("k") is None


@pytest.mark.parametrize("damage", ["not json", "[1, 2]", '{"value": "NotAChoice", "raw": "x", "method": "score"}',
                                    '{"value": "Yes", "raw": 5, "method": "score"}'])
def test_damaged_or_tampered_entries_are_misses(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "c.sqlite3"
    backend = Scoring()
    spec = loads_spec(CHOICE)
    problems: list[str] = []
    with ResultCache(path, on_problem=problems.append) as cache:
        cached = CachedRunner(Runner(spec, backend), cache)
        cached.run({"text": "a"})
        with sqlite3.connect(path) as db:
            db.execute("UPDATE results SET value = ?", (damage,))
        result = cached.run({"text": "a"})
    assert result.value == "Yes" and not result.cached and backend.calls == 2
    assert len(problems) == 1


def test_stored_answers_round_trip(tmp_path: Path) -> None:
    backend = Scoring()
    with ResultCache(tmp_path / "c.sqlite3") as cache:
        cached = CachedRunner(Runner(loads_spec(CHOICE), backend), cache)
        first = cached.run({"text": "a"})
        again = cached.run({"text": "a"})
    assert again.cached and again.value == first.value and stored(again)["value"] == "Yes" and backend.calls == 1


# ============================================================================ 8. one line, not a traceback

BAD_SPECS = [
    ("version: 1\nname: x\ndescription: 'a\x07b'\n", "is not allowed in YAML text", "3:"),
    ("version: 1\nname: x\n1: x\n", "keys must be strings", "3:1"),
    ("version: 1\nname: x\ninputs: {true: {type: string}}\n", "keys must be strings", "3:10"),
    ("version: 1\nname: x\ndescription: !!binary aGVsbG8=\n", "'!!binary' is not allowed", "3:14"),
    ("version: 1\nname: x\ndescription: !!set {a}\n", "'!!set' is not allowed", "3:14"),
    ('version: 1\nname: x\nextends: "a\\0b.yaml"\n', "NUL character", "3:1"),
    ("version: 1\nname: x\nextends: " + "a" * 2000 + ".yaml\n", "characters long", "3:1"),
    ("version: 1\nname: x\ndescription: " + "9" * 5000 + "\n", "too large", "3:14"),
    ('version: 1\nname: x\ntemplate: "\\ud800"\n', "lone surrogate", "3:11"),
    (BASE + "template: '{{ text|truncate(1, leeway=-5) }}'\nexamples: [{input: {text: a}, output: b}]\n",
     "template error", "4:1"),
    (BASE + "template: '{{ {\"a b\": 1}|xmlattr }}'\nexamples: [{input: {text: a}, output: b}]\n",
     "Invalid character", "4:1"),
    (BASE + "tests: [{input: {text: a}, expect: {matches: '(('}}]\n", "invalid regular expression", "4:"),
    (BASE + "tests: [{input: {text: a}, expect: {schema: {type: nonsense}}}]\n", "invalid JSON Schema", "4:"),
]


@pytest.mark.parametrize(("text", "message", "where"), BAD_SPECS, ids=[c[1][:30] for c in BAD_SPECS])
def test_bad_specs_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str, where: str
) -> None:
    path = write(tmp_path, text)
    line = one_line_error(capsys, main(["validate", str(path)]))
    assert message in line and f"{path}:{where}" in line


@pytest.mark.parametrize(("content", "message"), [
    ('{"input": {"text": "a"}, "output": ' + "[" * 100000 + "]" * 100000 + "}\n", "nests too deeply"),
    ('{"input": {"text": "a"}, "output": ' + "9" * 5000 + "}\n", "invalid JSON"),
    ('{"input": {"text": "a\x01"}, "output": "b"}\n', "invalid JSON"),
    ('{"input": {"text": "\\ud800"}, "output": "b"}\n', "lone surrogate"),
])
def test_bad_examples_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    (tmp_path / "ex.jsonl").write_text(content, encoding="utf-8")
    path = write(tmp_path, BASE + "examples_file: ex.jsonl\n")
    assert message in one_line_error(capsys, main(["validate", str(path)]))


def test_bad_cli_values_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, "version: 1\nname: x\ninputs: {n: {type: integer}}\n")
    assert "digits is too large" in one_line_error(capsys, main(["compile", str(spec), "-i", "n=" + "9" * 5000]))
    deep = "[" * 100000
    proc = subprocess.run([sys.executable, "-m", "promptdsl.cli", "compile", str(spec), "-i", "-"], input=deep,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nests too deeply" in proc.stderr
    text_spec = write(tmp_path, BASE, "text.yaml")
    proc = subprocess.run([sys.executable.encode(), b"-m", b"promptdsl.cli", b"compile", str(text_spec).encode(),
                           b"-i", b"text=bad \xff byte"], capture_output=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1 and b"not valid UTF-8" in proc.stderr


# ============================================================================ 9. reserved names


@pytest.mark.parametrize("name", ["output", "self", "none", "true", "false", "None", "loop", "range", "in"])
def test_reserved_input_names_are_refused(tmp_path: Path, name: str) -> None:
    assert name in RESERVED_INPUTS
    with pytest.raises(SpecError, match=f"input name '{name}' is reserved") as info:
        load_spec(write(tmp_path, f"version: 1\nname: x\ninputs: {{'{name}': {{type: string}}}}\n"))
    assert info.value.path == ("inputs", name) and info.value.line == 3


def test_output_block_is_still_there_for_templates(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE + "output: {type: choice, choices: [A, B]}\n"
                                            "template: '{{ text }} ({{ output.choices|join(\"/\") }})'\n"))
    assert Compiler(spec).compile({"text": "hi"}).messages[-1].content == "hi (A/B)"


# ============================================================================ 5, 6. output files and bad rows


def _results(tmp_path: Path, lines: list[dict[str, Any]], tail: bytes = b"") -> Path:
    out = tmp_path / "results.jsonl"
    out.write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines) + tail)
    return out


def test_resume_reads_without_writing_and_refuses_foreign_files(tmp_path: Path) -> None:
    from promptdsl.datafile import scan_output

    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my only line, no newline")
    with pytest.raises(InputError, match="not a promptdsl result line"):
        scan_output(notes)
    assert notes.read_bytes() == b"my only line, no newline"

    out = _results(tmp_path, [{"index": 0, "value": "a", "input": {"text": "x"}}], b'{"index": 1, "val')
    before = out.read_bytes()
    found = scan_output(out)
    assert set(found.done) == {0} and found.good_end < found.size and out.read_bytes() == before


@pytest.mark.parametrize("cut", [b"{", b'{"in', b'{"index"', b'{"index":', b'{"index": 1, "v'])
def test_a_last_line_cut_however_early_is_recognised_as_a_result(tmp_path: Path, cut: bytes) -> None:
    """The machine can die after any byte of a line, even within ``{"index":``."""
    from promptdsl.datafile import scan_output

    out = _results(tmp_path, [{"index": 0, "value": "a", "input": {"text": "x"}}], cut)
    found = scan_output(out)
    assert set(found.done) == {0} and found.size - found.good_end == len(cut)


def test_results_for_other_data_are_refused_before_any_change(tmp_path: Path) -> None:
    from promptdsl.datafile import DataFile, check_resume, scan_output

    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "other"}\n{"text": "rows"}\n', encoding="utf-8")
    out = _results(tmp_path, [{"index": 0, "value": "a", "input": {"text": "x"}}], b'{"index": 1, "val')
    before = out.read_bytes()
    with pytest.raises(InputError, match="different input"):
        check_resume(DataFile(data), scan_output(out))
    assert out.read_bytes() == before


def test_output_lock_refuses_a_second_run_and_repairs_only_when_opened(tmp_path: Path) -> None:
    from promptdsl.datafile import OutputLock, scan_output

    out = _results(tmp_path, [{"index": 0, "value": "a", "input": {"text": "x"}}], b'{"index": 1, "val')
    before = out.read_bytes()
    with OutputLock(out) as first:
        with pytest.raises(InputError, match="in use by another promptdsl run"):
            OutputLock(out)
        assert out.read_bytes() == before
        found = scan_output(out)
        with first.open(found) as f:
            f.write('{"index": 1}\n')
    assert found.repaired and out.read_bytes().endswith(b'}\n{"index": 1}\n')
    fresh = tmp_path / "fresh.jsonl"
    OutputLock(fresh).close()  # refused runs leave no empty file behind
    assert not fresh.exists()


def test_bad_rows_become_error_rows(tmp_path: Path) -> None:
    from promptdsl.datafile import DataFile

    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "bad \\ud800"}\n' + "[" * 100000 + "\n" + '{"n": ' + "9" * 5000 + "}\n{\"text\": \"ok\"}\n",
                    encoding="utf-8")
    rows = list(DataFile(data).rows())
    assert [r.error is not None for r in rows] == [True, True, True, False]
    assert "lone surrogate" in (rows[0].error or "") and "nests too deeply" in (rows[1].error or "")
    json.dumps([r.data for r in rows], ensure_ascii=False).encode("utf-8")  # every row can be written out


def test_bad_utf8_in_csv_names_its_line(tmp_path: Path) -> None:
    from promptdsl.datafile import DataFile

    data = tmp_path / "d.csv"
    data.write_bytes(b"text,label\nbad \xff,x\n")
    with pytest.raises(InputError, match=r"not UTF-8 text \(line 2\)"):
        DataFile(data)


# ============================================================================ 10, 11. failing rows and labels


def test_fields_map_inputs_to_data_fields(tmp_path: Path) -> None:
    from promptdsl.datafile import DataFile, parse_fields
    from promptdsl.dataset import run_dataset

    spec = loads_spec(CHOICE.replace("text", "tweet"))
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    lines: list[str] = []
    summary = run_dataset(Runner(spec, Scoring()), DataFile(data), lines.append)
    assert summary.ok == 0 and summary.errors == 2
    [(reason, count)] = summary.top_reasons()
    assert count == 2 and "no field for input 'tweet'" in reason and "--field tweet=text" in reason
    summary = run_dataset(Runner(spec, Scoring()), DataFile(data), lines.append,
                          fields=parse_fields(["tweet=text"], spec))
    assert summary.ok == 2 and summary.errors == 0
    with pytest.raises(InputError, match="unknown input 'twet'"):
        parse_fields(["twet=text"], spec)
    with pytest.raises(InputError, match="INPUT=FIELD"):
        parse_fields(["tweet"], spec)


def test_empty_label_cells_are_unlabelled() -> None:
    from promptdsl.evaluate import ChoiceMetrics, MatchMetrics

    metrics = ChoiceMetrics(("A", "B"))
    for gold in ("A", "", "  ", None):
        metrics.add(gold, "A")
    assert metrics.total == 1 and metrics.unlabelled == 3 and "" not in metrics.labels()
    match = MatchMetrics("text")
    match.add("", "x", True)
    assert match.total == 0 and match.unlabelled == 1


# ============================================================================ the same, through the CLI


class ScoringPlugin(Scoring):
    def __init__(self, model: str | None = None, options: Any = None) -> None:
        super().__init__()


@pytest.fixture
def scoring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """`--backend scoring` without a model; returns a spec whose input is `tweet`."""
    from promptdsl import registry

    real = registry.backend_class
    monkeypatch.setattr(registry, "backend_class", lambda name: ScoringPlugin if name == "scoring" else real(name))
    monkeypatch.setenv("PROMPTDSL_HOME", str(tmp_path / "home"))
    return write(tmp_path, CHOICE.replace("text", "tweet"), "tweet.yaml")


def _data(tmp_path: Path, rows: str, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(rows, encoding="utf-8")
    return path


def test_second_run_on_the_same_out_exits_2_and_changes_nothing(
    scoring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from promptdsl.datafile import OutputLock

    data = _data(tmp_path, '{"tweet": "a"}\n{"tweet": "b"}\n')
    out = _results(tmp_path, [{"index": 0, "value": "Yes", "input": {"tweet": "a"}}])
    before = out.read_bytes()
    with OutputLock(out):  # the first run, still going
        for extra in ([], ["--resume"]):
            code = main(["run", str(scoring), "--data", str(data), "--out", str(out), "-b", "scoring", *extra])
            assert "in use by another promptdsl run" in one_line_error(capsys, code)
            assert out.read_bytes() == before
    assert main(["run", str(scoring), "--data", str(data), "--out", str(out), "-b", "scoring"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_resume_refusals_leave_the_file_alone(scoring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _data(tmp_path, '{"tweet": "a"}\n{"tweet": "b"}\n')
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"a note without a newline")
    code = main(["run", str(scoring), "--data", str(data), "--out", str(notes), "--resume", "-b", "scoring"])
    assert "not a promptdsl result line" in one_line_error(capsys, code)
    assert notes.read_bytes() == b"a note without a newline"
    out = _results(tmp_path, [{"index": 0, "value": "Yes", "input": {"tweet": "other"}}], b'{"index": 1, "va')
    before = out.read_bytes()
    code = main(["run", str(scoring), "--data", str(data), "--out", str(out), "--resume", "-b", "scoring"])
    assert "different input" in one_line_error(capsys, code)
    assert out.read_bytes() == before


def test_a_lone_surrogate_row_is_an_error_line_and_resume_goes_on(
    scoring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data(tmp_path, '{"tweet": "bad \\ud800"}\n{"tweet": "fine"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["run", str(scoring), "--data", str(data), "--out", str(out), "-b", "scoring"]) == 1
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert "lone surrogate" in lines[0]["error"] and lines[1]["value"] == "Yes"
    capsys.readouterr()
    assert main(["run", str(scoring), "--data", str(data), "--out", str(out), "--resume", "-b", "scoring"]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2


def test_a_full_disk_is_one_line(
    scoring: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from promptdsl.datafile import OutputLock

    class Full(io.StringIO):
        def flush(self) -> None:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(OutputLock, "open", lambda self, resume: Full())
    data = _data(tmp_path, '{"tweet": "a"}\n')
    code = main(["run", str(scoring), "--data", str(data), "--out", str(tmp_path / "o.jsonl"), "-b", "scoring"])
    assert "No space left on device" in one_line_error(capsys, code)


def test_stdout_on_dev_full_is_one_line() -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "promptdsl.cli", "schema"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "No space left" in proc.stderr


def test_eval_says_why_rows_fail_and_maps_fields(
    scoring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data(tmp_path, "".join(f'{{"text": "t{i}", "label": "Yes"}}\n' for i in range(5)))
    code = main(["eval", str(scoring), "--data", str(data), "--label", "label", "-b", "scoring"])
    err = capsys.readouterr().err
    assert code == 2  # no row has the field: said before any model loads
    assert err == (f"promptdsl: error: {data}: none of the first 5 rows has a field for input 'tweet' (did you mean "
                   "'text'?); map it with --field tweet=text; their fields: 'label', 'text'\n")
    mixed = _data(tmp_path, '{"tweet": "t", "label": "Yes"}\n' + "".join(
        f'{{"text": "t{i}", "label": "Yes"}}\n' for i in range(4)), "mixed.jsonl")
    code = main(["eval", str(scoring), "--data", str(mixed), "--label", "label", "-b", "scoring"])
    err = capsys.readouterr().err
    assert code == 0  # some rows have it: the others fail one by one, and are counted
    assert ("4 rows failed: no field for input 'tweet' (did you mean 'text'?); map it with --field tweet=text; "
            f"the row has: 'text', 'label' (first at {mixed}:2)") in err
    code = main(["eval", str(scoring), "--data", str(data), "--label", "label", "-b", "scoring",
                 "--field", "tweet=text", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["accuracy"] == 1.0, captured.err


def test_eval_on_csv_counts_empty_labels_as_unlabelled(
    scoring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data(tmp_path, "tweet,label\na,Yes\nb,\nc,No\n", "data.csv")
    assert main(["eval", str(scoring), "--data", str(data), "--label", "label", "-b", "scoring", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["rows"] == 2 and metrics["unlabelled"] == 1 and "" not in metrics["confusion"]["labels"]


def test_eval_does_not_leave_an_unreadable_row_out_quietly(
    scoring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row of invalid JSON has no label to score: it was counted as "without a label" and the
    accuracy rose, exit 0."""
    data = _data(tmp_path, '{"tweet": "a", "label": "Yes"}\n{"tweet": "b", "label": "Yes"\n'
                           '{"tweet": "c", "label": "No"}\n')
    code = main(["eval", str(scoring), "--data", str(data), "--label", "label", "-b", "scoring", "--json"])
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert code == 1 and metrics["unreadable"] == 1 and metrics["unlabelled"] == 0 and metrics["complete"] is True
    assert f"invalid JSON at column 30: Expecting ',' delimiter (at {data}:2)" in captured.err  # not column 1
    assert "1 row could not be read, so the metrics leave it out; fix the line named above" in captured.err
    out = tmp_path / "per-row.jsonl"  # and again when the row is read back by --resume
    assert main(["eval", str(scoring), "--data", str(data), "--label", "label", "-b", "scoring", "--out", str(out)]) == 1
    capsys.readouterr()
    code = main(["eval", str(scoring), "--data", str(data), "--label", "label", "-b", "scoring", "--out", str(out),
                 "--resume", "--json"])
    assert code == 1 and json.loads(capsys.readouterr().out)["unreadable"] == 1
    csv_data = _data(tmp_path, "tweet,label\na,Yes\nb, c,No\n", "d.csv")  # a CSV row of the wrong width
    code = main(["eval", str(scoring), "--data", str(csv_data), "--label", "label", "-b", "scoring", "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert code == 1 and (metrics["unreadable"], metrics["unlabelled"]) == (1, 0)


def test_an_interrupted_eval_says_its_metrics_are_partial(
    scoring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl+C during row 2 of 40: the metrics of the rows done looked like the whole file's."""
    import signal

    calls: list[int] = []

    def score(self: Scoring, prompt: Prompt, continuations: Sequence[str]) -> list[float]:
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the CLI's handler: stop after the row in flight
        return [-1.0, -2.0]

    monkeypatch.setattr(Scoring, "score", score)
    data = _data(tmp_path, "".join(f'{{"tweet": "t{i}", "label": "Yes"}}\n' for i in range(40)))
    for extra in (["--json"], []):
        calls.clear()
        code = main(["eval", str(scoring), "--data", str(data), "--label", "label", "-b", "scoring", "--no-cache",
                     *extra])
        out = capsys.readouterr().out
        assert code == 130
        if extra:
            assert json.loads(out)["complete"] is False and 2 <= json.loads(out)["rows"] < 40  # (rows in flight end)
        else:
            assert out.startswith("partial: the run did not finish; these metrics cover only the rows done so far\n")


def test_debug_works_before_the_command(tmp_path: Path) -> None:
    spec = write(tmp_path, "version: 1\nname: x\nbogus: 1\n")
    with pytest.raises(SpecError):
        main(["--debug", "compile", str(spec)])
    with pytest.raises(SpecError):
        main(["compile", str(spec), "--debug"])


def test_a_broken_cache_is_one_warning_and_the_run_goes_on(
    scoring: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "home" / "cache" / "results.sqlite3"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"garbage" * 1000)
    data = _data(tmp_path, '{"tweet": "a"}\n{"tweet": "b"}\n')
    assert main(["run", str(scoring), "--data", str(data), "-b", "scoring"]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "--no-cache" in warnings[0]


# ============================================================================ end to end on the embedded model


@pytest.mark.model
def test_eval_on_the_real_model_with_fields_empty_labels_and_a_broken_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], llamacpp_backend: object
) -> None:
    """Items 7, 10 and 11 together: a garbage cache file warns once, `--field` maps the data's column, an
    empty label cell is unlabelled, and without `--field` the header is refused in one line."""
    monkeypatch.setenv("PROMPTDSL_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "cache" / "results.sqlite3"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not a database" * 100)
    data = _data(tmp_path, "tweet,label\nI love this wonderful day!,Positive\n"
                           "This is the worst service ever.,\nWhat a terrible awful mess.,Negative\n", "d.csv")
    sentiment = str(ROOT / "specs" / "sentiment.yaml")
    code = main(["eval", sentiment, "--data", str(data), "--label", "label", "-o", "n_threads=1", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1  # refused before the model loads, not three failed rows
    assert "d.csv: line 1: no column for input 'text' (did you mean 'tweet'?); map it with --field text=tweet" in err
    code = main(["eval", sentiment, "--data", str(data), "--label", "label", "--field", "text=tweet",
                 "-o", "n_threads=1", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(captured.out)
    assert metrics["rows"] == 2 and metrics["unlabelled"] == 1 and metrics["errors"] == 0
    assert metrics["accuracy"] == 1.0  # two plain cases the 135M model gets right
    warnings = [ln for ln in captured.err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "--no-cache" in warnings[0]


# ---------------------------------------------------------------------------- cost bounded by the spec's size


def test_aliases_of_a_large_string_are_refused_by_the_text_they_expand_to(tmp_path: Path) -> None:
    """Under the node cap, 30 aliases of an 800 KB string were scanned, checked and hashed at full
    size (a larger version ran for minutes and took gigabytes)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(f'version: 1\nname: bomb\njunk0: &a "{"A" * 800_000}"\njunk1: [{", ".join(["*a"] * 30)}]\n')
    with pytest.raises(SpecError, match=r"expands to more than 16 MiB of text \(alias bomb\?\)"):
        load_spec(path)


def test_validate_builds_the_whole_prompt_once_not_once_per_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each whole prompt joins every shot: once per example made validating quadratic."""
    from promptdsl.validate import validate_spec

    spec = loads_spec("version: 1\nname: many\ninputs: {t: {type: string}}\nexamples:\n"
                      + "".join(f"  - {{input: {{t: a{i}}}, output: b}}\n" for i in range(50))
                      + "tests:\n  - {input: {t: x}, expect: b}\n")
    whole: list[int] = []
    checked: list[int] = []
    compile_, check = Compiler.compile, Compiler.check
    monkeypatch.setattr(Compiler, "compile", lambda self, v: whole.append(1) or compile_(self, v))
    monkeypatch.setattr(Compiler, "check", lambda self, v: checked.append(1) or check(self, v))
    validate_spec(spec)
    assert (len(whole), len(checked)) == (1, 50)


def test_a_render_error_in_a_later_example_is_still_found() -> None:
    from promptdsl.validate import validate_spec

    spec = loads_spec("version: 1\nname: late\ninputs: {t: {type: string}}\ntemplate: \"{{ 'x' * (t | int) }}\"\n"
                      "examples:\n  - {input: {t: '1'}, output: b}\n  - {input: {t: '99999999'}, output: b}\n")
    with pytest.raises(SpecError, match="template 'template'"):
        validate_spec(spec)


REDOS_ITEMS = """\
version: 1
name: redos
inputs:
  xs: {type: array, items: {not: {pattern: '^(a|aa)+$'}}}
"""


def test_one_value_gets_one_regex_budget_and_a_timeout_is_no_pass_under_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each search had its own second, so an array of many items took that many seconds; and a
    search that timed out inside ``not`` was an error ``not`` turned into a pass."""
    from promptdsl import schema
    from promptdsl.inputs import validate_inputs

    monkeypatch.setattr(schema, "REGEX_BUDGET_SECONDS", 0.05)
    spec = loads_spec(REDOS_ITEMS)
    slow = "a" * 40 + "b"  # '^(a|aa)+$' backtracks for minutes on it
    with pytest.raises(InputError, match=r"input 'xs': the regular expressions took longer than 0.05 s in all"):
        validate_inputs(spec, {"xs": [slow] * 20})  # (the budget's wording: not 20 searches of a second each)
    assert validate_inputs(spec, {"xs": ["ab", "b"]}) == {"xs": ["ab", "b"]}


def test_a_lone_surrogate_from_python_is_an_input_error_not_a_backend_failure() -> None:
    """The command line refused it already; from the API it reached the backend as a UnicodeEncodeError."""
    from promptdsl.inputs import validate_inputs

    spec = loads_spec("version: 1\nname: x\ninputs: {t: {type: string}, xs: {type: array}}\n")
    for values in ({"t": "bad \ud800", "xs": []}, {"t": "ok", "xs": [{"k": "\udc80"}]}):
        with pytest.raises(InputError, match="the value is not valid UTF-8 text") as err:
            validate_inputs(spec, values)
        assert err.value.exit_code == 2
    assert validate_inputs(spec, {"t": "é 😀", "xs": []}) == {"t": "é 😀", "xs": []}


def test_run_spec_takes_the_path_of_a_spec_file(scoring: Path) -> None:
    """It is exported next to load_spec; given a path it said "'str' object has no attribute 'model'"."""
    from promptdsl import run_spec

    for spec in (str(scoring), scoring, load_spec(scoring)):
        assert run_spec(spec, {"tweet": "x"}, backend="scoring").value == "Yes"


def test_a_value_nested_too_deep_to_print_is_named_as_such() -> None:
    """A 64-character input nested 32 deep was reported as "16,777,279 characters"."""
    from promptdsl.compiler import compile_prompt

    spec = loads_spec("version: 1\nname: x\ninputs: {t: {type: array}}\n")
    deep: list[Any] = []
    for _ in range(32):
        deep = [deep]
    with pytest.raises(SpecError, match="a value nests more than 30 levels deep; the limit is 30") as err:
        compile_prompt(spec, {"t": deep})
    assert "characters" not in str(err.value)
    shallow: list[Any] = []
    for _ in range(20):
        shallow = [shallow]
    assert "[[[[" in compile_prompt(spec, {"t": shallow}).messages[-1].content


@pytest.mark.parametrize("closing", ["additionalProperties: false", "additionalProperties: {type: integer}"])
def test_keys_matched_for_additional_properties_go_through_the_bounded_regexes(
    closing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jsonschema matched them with Python's re, which no clock bounds: '^(a+)+$' on 40 a's and a '!' hung."""
    from promptdsl import schema
    from promptdsl.inputs import validate_inputs

    searched: list[str] = []
    real = schema.search
    monkeypatch.setattr(schema, "search", lambda p, t, f=0: searched.append(t) or real(p, t, f))
    spec = loads_spec(f"version: 1\nname: x\ninputs:\n  obj: {{type: object, patternProperties: {{'^a+$': {{}}}}, "
                      f"{closing}}}\n")
    with pytest.raises(InputError, match="input 'obj"):
        validate_inputs(spec, {"obj": {"aa": 1, "b!": "x"}})
    assert "b!" in searched  # through search(), so under the clock
    assert validate_inputs(spec, {"obj": {"aa": 1}}) == {"obj": {"aa": 1}}


def test_unevaluated_properties_next_to_pattern_properties_is_refused_at_load() -> None:
    with pytest.raises(SpecError, match="'unevaluatedProperties' next to 'patternProperties' is not supported"):
        loads_spec("version: 1\nname: x\ninputs:\n  obj: {type: object, patternProperties: {'^a': {}}, "
                   "unevaluatedProperties: false}\n")


def test_validate_renders_no_system_message_for_a_completion_spec() -> None:
    """compile() never renders it in completion mode; validate refused a spec that ran."""
    from promptdsl.validate import validate_spec

    spec = loads_spec("version: 1\nname: x\nmode: completion\nsystem: \"{{ t * 10000000 }}\"\ninputs: {t: {type: string}}\n"
                      "examples:\n  - {input: {t: a}, output: b}\n  - {input: {t: aa}, output: b}\n")
    assert validate_spec(spec) is spec


def test_a_huge_number_typed_for_an_input_is_named_short_and_said_to_be_too_large(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 5,000-digit -i value was echoed in full and called "not of type 'integer'"; 3,000 digits
    failed in the template as "OverflowError: int too large to convert to float"."""
    spec = write(tmp_path, "version: 1\nname: big\ninputs:\n  n: {type: integer}\n  t: {type: integer}\n"
                           "template: \"{{ 'x' * n }}\"\n")
    line = one_line_error(capsys, main(["compile", str(spec), "-i", "n=" + "9" * 5000, "-i", "t=1"]))
    assert line == "promptdsl: error: input 'n': a number of 5,000 digits is too large (at most 4,300)"
    line = one_line_error(capsys, main(["compile", str(spec), "-i", "n=1", "-i", "t=" + "x" * 5000]))
    assert len(line) < 200 and line.endswith("…' is not of type 'integer'"), line
    line = one_line_error(capsys, main(["compile", str(spec), "-i", "n=" + "9" * 3000, "-i", "t=1"]))
    assert "a number too large for the template's arithmetic" in line and "OverflowError" not in line


@pytest.mark.parametrize(("stdin", "kind"), [("null", "null"), ("[1]", "an array"), ('"x"', "a string"), ("3", "a number")])
def test_inputs_on_stdin_that_are_no_object_are_named_as_json_names_them(
    stdin: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`printf null | promptdsl run s.yaml -i -` said "got NoneType"; the data file said "got null"."""
    spec = write(tmp_path, "version: 1\nname: x\ninputs: {q: {type: string}}\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    line = one_line_error(capsys, main(["compile", str(spec), "-i", "-"]))
    assert line == f"promptdsl: error: stdin: expected a JSON object of inputs, got {kind}"


def test_a_token_like_key_is_masked_in_the_json_path_as_in_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The path was cut to 40 characters before masking, too short to be seen as a token: the
    `(at $.…)` part showed more of a password hash than the masked key beside it."""
    token = "Ab9cQw8Lm2Np4Rs6Tu8Vw0Xy2Za4Bc6De8Fg0Hi2Jk4Lm6No8Pq0Rs2Tu4Vw6Xy8Za0"
    spec = write(tmp_path, f'version: 1\nname: a\n"root:$6$Zq3tXj1u${token}:19000": 1\n')
    line = one_line_error(capsys, main(["validate", str(spec)]))
    assert "Ab9cQw8" not in line and line.endswith("(at $.root:$6$Zq3tXj1u$***:19000)"), line


@pytest.mark.parametrize("source", [
    "{{ ('x'.encode('ascii') * 2000000000) | length }}",
    "{{ ('%01000000000d'.encode('ascii') % 1) | length }}",
    "{{ 'abc'.encode('punycode') }}",
    "{{ ('a' * 60).translate({97: 'b' * 16000000}) | length }}",
])
def test_text_methods_whose_cost_no_check_bounds_are_refused(source: str) -> None:
    """bytes skipped every size check (2 GB for a 60-byte template); punycode ran 24 s in one step."""
    with pytest.raises(TemplateFailure, match=r"the text method '(encode|translate)' is not available in templates"):
        render(source, {})


def test_joining_a_generator_is_counted_before_the_text_is_built() -> None:
    """`'-' * 16000000` joined over a generator reached 1 GB before the size check ran."""
    with pytest.raises(TemplateFailure, match="the joined text"):
        render("{{ ('-' * 16000000).join(range(60) | map('string')) | length }}", {})
    assert render("{{ ', '.join(['a', 'b'] | map('upper')) }}", {}) == "A, B"


def test_a_schema_whose_ref_reenters_it_at_every_level_is_stopped_by_the_check_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`$defs.n = {allOf: [3 x {properties: {a: {$ref: n}}}]}` triples the work at each level of the
    value: 23 s for a value nested 11 deep, days for 20, with no regex for the budget to stop."""
    import promptdsl.schema as schema_module

    monkeypatch.setattr(schema_module, "REGEX_BUDGET_SECONDS", 0.3)
    branch = "{properties: {a: {$ref: '#/$defs/n'}}}"
    spec = write(tmp_path, "version: 1\nname: r\ninputs:\n  x:\n    type: object\n    $defs:\n"
                           f"      n: {{allOf: [{branch}, {branch}, {branch}]}}\n    $ref: '#/$defs/n'\n"
                           "template: '{{ x }}'\n")
    value = "x"
    for _ in range(20):
        value = f'{{"a": {value if value != "x" else json.dumps("x")}}}'
    start = time.monotonic()
    line = one_line_error(capsys, main(["compile", str(spec), "-i", f"x={value}"]))
    assert "input 'x': checking took longer than 0.3 s in all on one value: the schema's '$ref' re-enters it" in line, line
    assert time.monotonic() - start < 30  # not days (a bound for a noisy machine, not a timing claim)
    assert main(["compile", str(spec), "-i", 'x={"a": {"a": "x"}}']) == 0  # a shallow value is checked as ever


def test_a_format_regex_input_is_compiled_as_every_pattern_is_not_by_pythons_re(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """jsonschema's `format: regex` ran re.compile on the value: a 3 MB data row took 22 s and 760 MB."""
    from promptdsl.inputs import validate_inputs

    spec = loads_spec("version: 1\nname: f\ninputs: {p: {type: string, format: regex}}\n")
    assert validate_inputs(spec, {"p": "^[a-z]+$"}) == {"p": "^[a-z]+$"}
    with pytest.raises(InputError, match=r"is not a 'regex'"):
        validate_inputs(spec, {"p": "(a)" * 1000})  # 3,000 characters: past the 2,000 every pattern gets
    with pytest.raises(InputError, match=r"is not a 'regex'"):
        validate_inputs(spec, {"p": "(unclosed"})


def test_the_checks_of_a_whole_spec_share_one_budget_not_one_per_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each example and test had 2 s of regex time of its own: 10 inputs in one test took 17 s to
    validate, and a 1 MiB spec holds thousands of tests."""
    import promptdsl.schema as schema_module

    monkeypatch.setattr(schema_module, "SPEC_BUDGET_SECONDS", 0.4)
    slow = "'^(?:(a|aa)*c|.*)'"  # backtracks for a while on a run of a's, then matches
    tests = "".join(f"  - input: {{x: {'a' * 26}}}\n    expect: x\n" for _ in range(12))
    spec = write(tmp_path, f"version: 1\nname: s\ninputs:\n  x: {{type: string, pattern: {slow}}}\ntests:\n{tests}")
    line = one_line_error(capsys, main(["validate", str(spec)]))
    assert "the regular expressions took longer than 0.4 s in all for the whole spec" in line, line
