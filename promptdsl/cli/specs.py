"""Commands about spec files: ``validate``, ``compile``, ``test``, ``schema``."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from ..compiler import Compiler
from ..errors import PromptDSLError
from ..loader import check_folder_entry, load_spec, real_path, spec_files
from ..schema import spec_schema
from ..spec import Spec
from ..validate import spec_notes, validate_spec
from .common import Commands, add_backend_flags, add_input_flags, inputs_from_args, runner_from_args
from .tools import add_tool_flags


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("validate", parents=[common],
                       help="check specs (files or folders of them) and compile them with their examples and tests")
    p.add_argument("specs", type=Path, nargs="+")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("compile", parents=[common], help="print the compiled prompt")
    p.add_argument("spec", type=Path)
    add_input_flags(p)
    p.add_argument("--json", action="store_true", help="print the prompt as JSON (messages in chat mode)")
    p.set_defaults(handler=cmd_compile)

    p = sub.add_parser("test", parents=[common], help="run each spec's tests (files or folders of specs)")
    p.add_argument("specs", type=Path, nargs="+")
    add_backend_flags(p)
    add_tool_flags(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per test (spec, test, name, passed, detail, value)")
    p.set_defaults(handler=cmd_test)

    p = sub.add_parser("schema", parents=[common], help="print the spec JSON Schema")
    p.set_defaults(handler=cmd_schema)


def _load_each(
    args: argparse.Namespace, load: Callable[[Path], Spec]
) -> tuple[list[tuple[Path, Spec]], list[PromptDSLError]]:
    """Every spec named (a folder: its specs), each bad one named on its own error line, so one
    broken spec hides none of the others: (the loaded ones, the errors shown). A file of a folder
    that a loaded spec is built from (its examples file, a base) is no spec of its own."""
    loaded: list[tuple[Path, Spec]] = []
    failed: list[tuple[PromptDSLError, Path | None]] = []  # (why, the file when a folder held it)
    parts: set[Path] = set()
    seen: set[Path] = set()
    for given in args.specs:
        try:
            paths = spec_files(given)
        except PromptDSLError as exc:
            failed.append((exc, None))
            continue
        for path in paths:
            key = real_path(path)
            if key in seen:
                continue
            seen.add(key)
            try:
                check_folder_entry(given, path)
                spec = load(path)
            except PromptDSLError as exc:
                failed.append((exc, key if given.is_dir() else None))
                continue
            loaded.append((path, spec))
            parts |= set(spec.files[1:])
    shown = [problem for problem, in_folder in failed if in_folder is None or in_folder not in parts]
    for problem in shown:
        _say(problem, args.debug)
    return loaded, shown


def _exit_code(problems: list[PromptDSLError]) -> int:
    """2 when any spec is bad input; otherwise the errors' own code (1: a plugin failed, which is
    no fault of the spec), as ``run`` of the same spec would exit; 0 for none."""
    codes = {problem.exit_code for problem in problems}
    return 2 if 2 in codes else max(codes, default=0)


def _say(problem: PromptDSLError, debug: bool) -> None:
    """One spec's error line (its traceback first with --debug); the command goes on with the rest."""
    if debug:
        traceback.print_exception(problem)
    print(f"promptdsl: error: {problem}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    loaded, problems = _load_each(args, validate_spec)
    ok = 0
    for path, spec in loaded:
        try:
            notes = spec_notes(spec)
        except PromptDSLError as exc:  # a plugin's bug while looking (its check_model, say): this spec's line
            _say(exc, args.debug)
            problems.append(exc)
            continue
        counts = f"{_count(len(spec.examples), 'example')}, {_count(len(spec.tests), 'test')}"
        print(f"ok: {path} ({counts}, {spec.mode} mode, output {spec.output.type})")
        for note in notes:
            print(f"  note: {note}")
        ok += 1
    if ok + len(problems) > 1:
        print(f"{ok} ok, {len(problems)} invalid")
    return _exit_code(problems)


def cmd_compile(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    values = inputs_from_args(spec, args)
    prompt = Compiler(spec).compile(values)
    if args.json:
        print(prompt.to_json())
    else:
        sys.stdout.write(prompt.render())
        sys.stdout.write("\n")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from ..expect import run_tests

    loaded, problems = _load_each(args, load_spec)
    if not loaded:
        return _exit_code(problems) or 2
    passed = failed = 0
    for path, spec in loaded:
        if not spec.tests:
            if not args.json:
                print(f"note: {path} has no tests")
            continue
        try:
            runner = runner_from_args(spec, args)
        except PromptDSLError as exc:  # this spec cannot run as asked (a forced tool not given, say): the rest can
            _say(exc, args.debug)
            problems.append(exc)
            continue
        for outcome in run_tests(spec, runner):
            if args.json:  # one object per test, for CI reports
                print(json.dumps({"spec": str(path), "test": outcome.index, "name": outcome.test.name or None,
                                  "passed": outcome.passed, "detail": outcome.detail, "value": outcome.value},
                                 ensure_ascii=False), flush=True)
            else:
                print(f"{'PASS' if outcome.passed else 'FAIL'} {outcome.label}: {outcome.detail}", flush=True)
            passed += outcome.passed
            failed += not outcome.passed
    invalid = len(problems)
    if not args.json:
        skipped = f"; {invalid} spec{'s' if invalid != 1 else ''} not run (invalid, see above)" if invalid else ""
        print(f"{passed} passed, {failed} failed{skipped}")
    return _exit_code(problems) or (1 if failed else 0)


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(spec_schema(), indent=2, ensure_ascii=False))
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
