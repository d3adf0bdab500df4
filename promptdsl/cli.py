"""The ``promptdsl`` command: a thin front end over the library API.

Exit codes: 0 success; 1 a run or test failed; 2 bad usage or bad input.
User mistakes print one line on stderr, never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .cli_tools import add_tool_flags, cmd_tools, tool_settings
from .compiler import Compiler
from .dataset import add_dataset_flags
from .errors import InputError, PromptDSLError
from .inputs import collect_inputs, parse_options, validate_inputs
from .loader import load_spec, spec_schema
from .registry import list_backends
from .runner import Runner
from .spec import Spec

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", "-b", help="backend plugin to use (see 'promptdsl backends')")
    p.add_argument("--model", "-m", help="model: alias, .gguf path or remote id (backend-specific)")
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE",
        help="override a model option, e.g. -o temperature=0.7 -o base_url=http://127.0.0.1:8000/v1",
    )


def _add_input_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input", "-i", action="append", default=[], metavar="NAME=VALUE",
        help="an input value; NAME=@file reads a file; '-' reads a JSON object from stdin",
    )


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = _Parser(prog="promptdsl", description=(__doc__ or "").splitlines()[0], parents=[common])
    parser.add_argument("--version", action="version", version=f"promptdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("run", parents=[common], help="run a spec on one input or a dataset")
    p.add_argument("spec", type=Path)
    _add_input_flags(p)
    _add_backend_flags(p)
    p.add_argument("--data", type=Path, help="dataset: .jsonl or .csv, one input object per row")
    p.add_argument("--out", type=Path, help="write one JSON result per line here (dataset runs)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    add_tool_flags(p)
    add_dataset_flags(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("eval", parents=[common], help="score a spec on labelled data: accuracy, macro-F1, confusion")
    p.add_argument("spec", type=Path)
    p.add_argument("--data", type=Path, required=True, help="labelled dataset: .jsonl or .csv")
    p.add_argument("--label", required=True, metavar="FIELD", help="the field holding the expected output")
    p.add_argument("--out", type=Path, help="write each row's result (with its label and correctness) here")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_input_flags(p)
    _add_backend_flags(p)
    add_dataset_flags(p)
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("validate", parents=[common], help="check specs and compile them with their examples")
    p.add_argument("specs", type=Path, nargs="+")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("compile", parents=[common], help="print the compiled prompt")
    p.add_argument("spec", type=Path)
    _add_input_flags(p)
    p.add_argument("--json", action="store_true", help="print the prompt as JSON (messages in chat mode)")
    p.set_defaults(handler=cmd_compile)

    p = sub.add_parser("test", parents=[common], help="run each spec's tests")
    p.add_argument("specs", type=Path, nargs="+")
    _add_backend_flags(p)
    p.set_defaults(handler=cmd_test)

    p = sub.add_parser("backends", parents=[common], help="list installed backend plugins")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_backends)

    p = sub.add_parser("tools", parents=[common], help="list installed tool plugins and their argument schemas")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_tools)

    p = sub.add_parser("schema", parents=[common], help="print the spec JSON Schema")
    p.set_defaults(handler=cmd_schema)

    p = sub.add_parser("chat", parents=[common], help="open the terminal UI: chat, run specs, history")
    p.add_argument("specs", type=Path, nargs="*", help="spec files or folders for the spec picker")
    _add_backend_flags(p)
    p.add_argument("--system", help="system prompt for new conversations")
    p.add_argument("--continue", "-c", dest="resume_latest", action="store_true",
                   help="resume the most recent conversation")
    p.set_defaults(handler=cmd_chat)
    return parser


# ---------------------------------------------------------------------------- helpers


def _runner(spec: Spec, args: argparse.Namespace) -> Runner:
    return Runner(spec, backend_name=args.backend, model=args.model, options=parse_options(args.option),
                  tool_settings=tool_settings(args))


def _print_value(value: Any) -> None:
    if isinstance(value, str):
        print(value)
    else:
        print(json.dumps(value, ensure_ascii=False, indent=2))


# ---------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if args.data is not None:
        from .dataset import run_dataset_cli

        return int(run_dataset_cli(spec, args))
    if args.out is not None:
        raise InputError("--out goes with --data (a dataset run); for one input use --json")
    values = validate_inputs(spec, collect_inputs(spec, args.input, sys.stdin))
    runner = _runner(spec, args)
    response = runner.stream(values)
    if args.stream and not args.json:
        for chunk in response:
            sys.stdout.write(chunk)
            sys.stdout.flush()
        sys.stdout.write("\n")
        response.result()
        return 0
    result = response.result()
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        _print_value(result.value)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import run_eval_cli

    return run_eval_cli(load_spec(args.spec), args)


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        try:
            spec = load_spec(path)
            compiler = Compiler(spec)
            for item in [*(ex.input for ex in spec.examples), *(t.input for t in spec.tests)]:
                compiler.compile(validate_inputs(spec, item))
        except PromptDSLError as exc:
            print(f"promptdsl: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"ok: {path} ({len(spec.examples)} examples, {len(spec.tests)} tests, {spec.mode} mode, "
              f"output {spec.output.type})")
    return 2 if failed else 0


def cmd_compile(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    values = validate_inputs(spec, collect_inputs(spec, args.input, sys.stdin))
    prompt = Compiler(spec).compile(values)
    if args.json:
        print(prompt.to_json())
    else:
        sys.stdout.write(prompt.render())
        sys.stdout.write("\n")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from .spectests import run_tests

    specs = [load_spec(p) for p in args.specs]
    passed = failed = 0
    for spec in specs:
        runner = _runner(spec, args)
        for outcome in run_tests(spec, runner):
            status = "PASS" if outcome.passed else "FAIL"
            print(f"{status} {outcome.label}: {outcome.detail}", flush=True)
            passed += outcome.passed
            failed += not outcome.passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_backends(args: argparse.Namespace) -> int:
    infos = list_backends()
    if args.json:
        print(json.dumps([
            {"name": i.name, "version": i.version, "distribution": i.distribution,
             "capabilities": sorted(c.value for c in i.capabilities), "error": i.error}
            for i in infos
        ], indent=2))
        return 0
    if not infos:
        print("no backends installed")
        return 0
    width = max(len(i.name) for i in infos)
    for i in infos:
        if i.error:
            print(f"{i.name:<{width}}  {i.version:<8}  BROKEN: {i.error}")
        else:
            caps = ", ".join(sorted(c.value for c in i.capabilities))
            print(f"{i.name:<{width}}  {i.version:<8}  {caps}  ({i.distribution})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(spec_schema(), indent=2, ensure_ascii=False))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from promptdsl_tui.launch import run_chat  # lazy: Textual loads only for the UI

    code: int = run_chat(args.specs, backend=args.backend, model=args.model, options=parse_options(args.option),
                         system=args.system, resume_latest=args.resume_latest)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return int(handler(args))
    except PromptDSLError as exc:
        if args.debug:
            raise
        print(f"promptdsl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("promptdsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
