"""What a bug report needs, gathered in one place (``promptdsl doctor``).

Versions, platform, the CPU features that matter to local models, each
backend's own diagnostics, where promptdsl keeps its files, and a short real
decode on every local backend *in a child process*: a backend that crashes
the process (a segfault in native code) then becomes a clear problem line
with the likely fix, instead of a dead terminal.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import __version__, cpu
from .paths import cache_dir, data_dir
from .registry import backend_class, list_backends

#: CPU flags that decide which llama.cpp kernels run (and which can crash).
INTERESTING_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "sve",
    "neon",
)
PROBE_TIMEOUT = 180.0
PROBE_PROMPT = "The capital of France is"

# The child: start the backend, decode a few tokens after a multi-token prompt, print JSON.
_PROBE = """
import json, sys
from promptdsl.backend import GenerationOptions
from promptdsl.errors import PromptDSLError
from promptdsl.prompt import Prompt
from promptdsl.registry import get_backend
try:
    backend = get_backend(sys.argv[1], None, json.loads(sys.argv[2]))
    text = backend.complete(Prompt(mode="completion", text=sys.argv[3]), GenerationOptions(max_tokens=4))
except PromptDSLError as exc:
    sys.exit(str(exc))
print(json.dumps({"text": text, "model": backend.model_id}))
"""


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one child-process decode."""

    ok: bool
    detail: str  # the generated text, or what went wrong
    crashed: bool = False  # killed by a signal (segfault, abort, illegal instruction)


@dataclass
class DoctorReport:
    """Sections of (label, value) lines, and one line per problem found."""

    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, section: str, label: str, value: object) -> None:
        self.sections.setdefault(section, []).append((label, str(value)))

    def render(self) -> str:
        """Aligned text: one block per section, then the verdict with one line per problem."""
        width = max((len(label) for lines in self.sections.values() for label, _ in lines), default=0)
        out: list[str] = []
        for section, lines in self.sections.items():
            out.append(section)
            out += [f"  {label:<{width}}  {value}" for label, value in lines]
        if self.ok:
            out.append("no problems found")
        else:
            out.append(f"{len(self.problems)} problem(s):")
            out += [f"  {p}" for p in self.problems]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"sections": {k: dict(v) for k, v in self.sections.items()}, "problems": list(self.problems)}


def interesting_flags(cpuinfo: str | None = None) -> list[str]:
    """The flags of :data:`INTERESTING_FLAGS` this CPU reports, in that order."""
    have = cpu.cpu_flags(cpuinfo)
    return [f for f in INTERESTING_FLAGS if f in have]


def _cores_line() -> str:
    """``doctor``'s cores line: the machine's, this process's, and a cgroup quota if one is set."""
    usable = cpu.affinity_cpus() if hasattr(os, "sched_getaffinity") else "?"
    quota = cpu.cpu_quota()
    line = f"{os.cpu_count()} ({usable} usable by this process"
    if quota is not None:
        line += f", {cpu.usable_cpus()} within its cgroup CPU quota of {quota:g}"
    return line + ")"


def probe(name: str, options: Mapping[str, Any], *, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    """Decode a few tokens on backend ``name`` in a child process; a crash there cannot take us down."""
    cmd = [sys.executable, "-c", _PROBE, name, json.dumps(dict(options)), PROBE_PROMPT]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"no answer within {timeout:g}s")
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        return ProbeResult(False, f"the process died with {sig}", crashed=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return ProbeResult(False, lines[-1] if lines else f"exit code {proc.returncode}")
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return ProbeResult(False, f"unexpected output {proc.stdout[-200:]!r}")
    return ProbeResult(True, f"{out['model']} answered {out['text']!r}")


def _options_flags(options: Mapping[str, Any]) -> str:
    return " ".join(f"-o {k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in options.items())


def diagnose(*, decode: bool = True, prober: Callable[..., ProbeResult] | None = None) -> DoctorReport:
    """Collect the report; ``decode=False`` skips the child-process decodes (``prober`` replaces :func:`probe`)."""
    prober = prober or probe
    report = DoctorReport()
    report.add("promptdsl", "version", __version__)
    report.add(
        "promptdsl", "python", f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    )
    report.add("promptdsl", "os", platform.platform())
    report.add("cpu", "model", cpu.cpu_model())
    report.add("cpu", "cores", _cores_line())
    report.add("cpu", "flags", " ".join(interesting_flags()) or "unknown")
    report.add("files", "data dir", data_dir(create=False))
    report.add("files", "cache dir", cache_dir(create=False))

    infos = list_backends()
    if not infos:
        report.problems.append("no backend plugins are installed (pip install promptdsl-llamacpp)")
    for info in infos:
        section = f"backend {info.name}"
        if info.error:
            report.add(section, "status", "BROKEN")
            report.problems.append(f"backend {info.name}: {info.error}")
            continue
        report.add(section, "version", f"{info.version} ({info.distribution})")
        cls = backend_class(info.name)
        try:
            for label, value in cls.diagnostics():
                report.add(section, label, value)
        except Exception as exc:  # a plugin's diagnostics may fail in any way; that is itself worth reporting
            report.problems.append(f"backend {info.name}: diagnostics failed: {type(exc).__name__}: {exc}")
        except SystemExit as exc:  # even by ending the process: the report must still come
            report.problems.append(f"backend {info.name}: diagnostics failed: it called sys.exit({exc.code!r})")
        if not (decode and cls.local):
            continue
        result = prober(info.name, {})
        report.add(section, "decode", result.detail if result.ok else f"FAILED: {result.detail}")
        if result.ok:
            continue
        problem = f"backend {info.name}: a short decode failed: {result.detail}"
        if result.crashed and cls.safe_options:
            retry = prober(info.name, dict(cls.safe_options))
            report.add(
                section,
                f"decode with {_options_flags(cls.safe_options)}",
                retry.detail if retry.ok else f"FAILED: {retry.detail}",
            )
            if retry.ok:
                problem += f"; fix: run with {_options_flags(cls.safe_options)} (or set them in model.options)"
        report.problems.append(problem)
    _tool_plugins(report)
    report.problems += stray_entry_points()
    return report


def stray_entry_points() -> list[str]:
    """Entry points in a group named like promptdsl's that promptdsl does not read (``promptdsl.backend``,
    ``promptdsl_tools``): their plugins are silently absent, and only a listing of groups shows why."""
    from importlib.metadata import entry_points

    from .errors import did_you_mean
    from .registry import GROUP as BACKENDS
    from .tools.registry import GROUP as TOOLS

    out = []
    installed = entry_points()  # read once: each call scans every distribution's metadata
    for group in sorted(installed.groups):
        squashed = group.lower().replace("_", ".").replace("-", ".")
        if group in (BACKENDS, TOOLS) or not squashed.startswith("promptdsl"):
            continue
        names = ", ".join(sorted(ep.name for ep in installed.select(group=group)))
        out.append(f"entry points in group '{group}' ({names}) are read by nothing"
                   f"{did_you_mean(group, (BACKENDS, TOOLS))}; promptdsl reads '{BACKENDS}' and '{TOOLS}'")
    return out


def _tool_plugins(report: DoctorReport) -> None:
    """Installed tool plugins, and a problem line for each one a spec naming it would fail on."""
    from .tools.registry import list_tools

    tools = list_tools()
    healthy = [t.name for t in tools if not t.error]
    report.add("tools", "plugins", ", ".join(healthy) or "none")
    for info in tools:
        if info.error:
            report.add("tools", info.name, "BROKEN")
            report.problems.append(f"tool {info.name}: {info.error}")
