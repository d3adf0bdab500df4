"""Jinja2 templates, always sandboxed, with undefined names as errors.

Specs come from files people share, so a template may only format the data it
is given: the sandbox refuses Python internals such as ``''.__class__``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateFailure(Exception):
    """Why a template failed, in one line (the caller adds where)."""


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["tojson"] = _tojson
    return env


@lru_cache(maxsize=512)
def compile_template(source: str) -> jinja2.Template:
    """Parse a template once; raise TemplateFailure on a syntax error."""
    try:
        return environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailure(f"template syntax error on its line {exc.lineno}: {exc.message}") from None


def free_names(source: str) -> set[str]:
    """Names a template reads from its context (globals such as ``range`` excluded)."""
    env = environment()
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailure(f"template syntax error on its line {exc.lineno}: {exc.message}") from None
    return set(jinja2.meta.find_undeclared_variables(ast)) - set(env.globals)


def private_attributes(source: str) -> list[str]:
    """Attributes like ``__class__`` a template reaches for: refused before anything renders."""
    ast = environment().parse(source)
    found = [n.attr for n in ast.find_all(jinja2.nodes.Getattr) if n.attr.startswith("_")]
    for item in ast.find_all(jinja2.nodes.Getitem):
        if isinstance(item.arg, jinja2.nodes.Const) and str(item.arg.value).startswith("_"):
            found.append(str(item.arg.value))
    return found


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context``; every failure is a TemplateFailure."""
    template = compile_template(source)
    try:
        return template.render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateFailure(f"undefined variable: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateFailure(f"unsafe template operation refused by the sandbox: {exc}") from None
    except jinja2.TemplateError as exc:
        raise TemplateFailure(f"template error: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateFailure(f"template error: {type(exc).__name__}: {exc}") from None
