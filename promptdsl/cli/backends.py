"""``promptdsl backends``: the installed backend plugins, broken ones by name."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from ..backend import refused_options
from ..registry import list_backends
from .common import Commands


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("backends", parents=[common], help="list installed backend plugins")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_backends)


def cmd_backends(args: argparse.Namespace) -> int:
    infos = list_backends()
    if args.json:
        print(json.dumps([
            {"name": i.name, "version": i.version, "distribution": i.distribution,
             "capabilities": sorted(c.value for c in i.capabilities),
             "probed_capabilities": sorted(c.value for c in i.probed_capabilities), "error": i.error,
             "options": i.options_schema}
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
            if i.probed_capabilities:
                caps += f" (per server: {', '.join(sorted(c.value for c in i.probed_capabilities))})"
            print(f"{i.name:<{width}}  {i.version:<8}  {caps}  ({i.distribution})")
            shown = "not declared (not checked)" if i.options_schema is None else _options(i.options_schema)
            print(f"{'':<{width}}  options: {shown}")  # as `promptdsl tools` says it
    return 0


def _options(schema: Mapping[str, Any]) -> str:
    """``name=default`` for each declared option (``--json`` gives the whole schema); an option
    marked ``deprecated`` (declared only to be refused with a reason) is not offered."""
    props: Mapping[str, Any] = schema.get("properties", {})
    refused = refused_options(schema)
    return ", ".join(k + (f"={json.dumps(v['default'])}" if isinstance(v, Mapping) and "default" in v else "")
                     for k, v in props.items() if k not in refused) or "none"
