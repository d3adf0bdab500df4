"""What this machine's CPU offers: its model, feature flags, and the cores this process may use.

A module of its own (standard library only) because backends ask it on every start to pick
their threads, and ``doctor`` shows the same figures: one reading, one place.
"""

from __future__ import annotations

import math
import os
import platform
import re
from pathlib import Path


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


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (``flags``/``Features`` of ``/proc/cpuinfo``); empty where unknown."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


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
