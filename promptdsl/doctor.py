"""What a bug report needs, gathered in one place (``promptdsl doctor``).

Versions, platform, the CPU features that matter to local models, each
backend's own diagnostics, where promptdsl keeps its files, and a short real
decode on every local backend *in a child process*: a backend that crashes
the process (a segfault in native code) then becomes a clear problem line
with the likely fix, instead of a dead terminal.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
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


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The flags of :data:`INTERESTING_FLAGS` this CPU reports."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            return []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have = set(value.split())
            return [f for f in INTERESTING_FLAGS if f in have]
    return []


def affinity_cpus() -> int:
    """The cores this process may be scheduled on (its CPU affinity), else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_quota(root: Path = Path("/")) -> float | None:
    """This process's cgroup CPU quota in cores (docker ``--cpus``, Kubernetes CPU limits), the
    tightest along its cgroup's path; None when there is none or it cannot be read (not Linux).

    cgroup v2 keeps it in ``cpu.max`` ("150000 100000", or "max 100000"), v1 in ``cpu.cfs_quota_us``
    (-1: none) over ``cpu.cfs_period_us``; the process's cgroup comes from ``/proc/self/cgroup``,
    where its controller is mounted from ``/proc/self/mountinfo``. ``root`` stands for ``/`` (tests)."""
    try:
        groups = (root / "proc/self/cgroup").read_text(encoding="utf-8", errors="replace")
        mounts = (root / "proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    quotas = []
    for version, group in _cpu_cgroups(groups):
        for mount_root, mount_point in _cgroup_mounts(mounts, version):
            quotas += _quotas_along(root, mount_root, mount_point, group, version)
    return min(quotas) if quotas else None


def usable_cpus(root: Path = Path("/")) -> int:
    """The cores this process can use: its affinity, within its cgroup CPU quota rounded up."""
    cores = affinity_cpus()
    quota = cpu_quota(root)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def _cpu_cgroups(text: str) -> list[tuple[int, str]]:
    """(cgroup version, path) of this process's CPU controller, from ``/proc/self/cgroup``."""
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            found.append((2, path))
        elif "cpu" in controllers.split(","):
            found.append((1, path))
    return found


def _cgroup_mounts(text: str, version: int) -> list[tuple[str, str]]:
    """(root inside the hierarchy, mount point) of each cgroup mount of ``version`` with the CPU controller."""
    found = []
    for line in text.splitlines():
        fields, _, rest = line.partition(" - ")
        left, right = fields.split(), rest.split()
        if len(left) < 5 or len(right) < 3:
            continue
        kind, options = right[0], right[2].split(",")
        if (version == 2 and kind == "cgroup2") or (version == 1 and kind == "cgroup" and "cpu" in options):
            found.append((_unescape(left[3]), _unescape(left[4])))
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _quotas_along(root: Path, mount_root: str, mount_point: str, group: str, version: int) -> list[float]:
    """The quotas set on ``group`` and each of its parents below the mount, in cores."""
    if not (group == mount_root or group.startswith(mount_root.rstrip("/") + "/")):
        return []
    inside = group[len(mount_root.rstrip("/")) :].strip("/")
    base = root / mount_point.lstrip("/")
    parts = [p for p in inside.split("/") if p]
    quotas = []
    for depth in range(len(parts), -1, -1):
        quota = _read_quota(base.joinpath(*parts[:depth]), version)
        if quota is not None:
            quotas.append(quota)
    return quotas


def _read_quota(folder: Path, version: int) -> float | None:
    try:
        if version == 2:
            quota, _, period = (folder / "cpu.max").read_text(encoding="ascii").strip().partition(" ")
        else:
            quota = (folder / "cpu.cfs_quota_us").read_text(encoding="ascii").strip()
            period = (folder / "cpu.cfs_period_us").read_text(encoding="ascii").strip()
        q, p = int(quota), int(period)
    except (OSError, ValueError, UnicodeDecodeError):  # "max", -1 (no quota), or nothing to read
        return None
    return q / p if q > 0 and p > 0 else None


def _cores_line() -> str:
    """``doctor``'s cores line: the machine's, this process's, and a cgroup quota if one is set."""
    usable = affinity_cpus() if hasattr(os, "sched_getaffinity") else "?"
    quota = cpu_quota()
    line = f"{os.cpu_count()} ({usable} usable by this process"
    if quota is not None:
        line += f", {usable_cpus()} within its cgroup CPU quota of {quota:g}"
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
    report.add("cpu", "model", cpu_model())
    report.add("cpu", "cores", _cores_line())
    report.add("cpu", "flags", " ".join(cpu_flags()) or "unknown")
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
    return report
