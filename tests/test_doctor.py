"""``promptdsl doctor``: what a bug report needs, and a crash in a child process turned into a line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_dist import fake_distribution

from promptdsl import doctor
from promptdsl.cpu import cpu_model
from promptdsl.doctor import ProbeResult, diagnose, interesting_flags, probe

CPUINFO = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx avx2 avx512f amx_tile amx_int8 xyz\n"


def test_cpu_facts_from_cpuinfo() -> None:
    assert cpu_model(CPUINFO) == "Intel(R) Xeon(R) Platinum 8480+"
    assert interesting_flags(CPUINFO) == ["avx", "avx2", "avx512f", "amx_tile", "amx_int8"]


def test_report_without_decoding_lists_everything() -> None:
    report = diagnose(decode=False)
    assert report.ok, report.problems
    labels = {(section, label) for section, lines in report.sections.items() for label, _ in lines}
    assert {("promptdsl", "version"), ("promptdsl", "python"), ("promptdsl", "os"), ("cpu", "flags"),
            ("files", "data dir"), ("backend llamacpp", "llama.cpp system info"),
            ("backend llamacpp", "embedded model"), ("backend llamacpp", "threads")} <= labels
    assert "backend openai" in report.sections  # remote backends are listed, never probed


def test_a_crash_becomes_a_problem_line_with_the_fix() -> None:
    calls: list[dict[str, Any]] = []

    def prober(name: str, options: dict[str, Any]) -> ProbeResult:
        calls.append(options)
        if options:
            return ProbeResult(True, "smollm2 answered ' Paris'")
        return ProbeResult(False, "the process died with SIGSEGV", crashed=True)

    report = diagnose(prober=prober)
    assert calls == [{}, {"extra_bufts": False}]
    assert report.problems == [
        "backend llamacpp: a short decode failed: the process died with SIGSEGV; "
        "fix: run with -o extra_bufts=false (or set them in model.options)"
    ]
    lines = dict(report.sections["backend llamacpp"])
    assert lines["decode"] == "FAILED: the process died with SIGSEGV"
    assert lines["decode with -o extra_bufts=false"] == "smollm2 answered ' Paris'"


def test_a_failure_that_is_no_crash_is_reported_without_a_retry() -> None:
    report = diagnose(prober=lambda name, options: ProbeResult(False, "llamacpp: model file not found"))
    assert report.problems == ["backend llamacpp: a short decode failed: llamacpp: model file not found"]


def test_probe_survives_a_child_that_segfaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    result = probe("llamacpp", {}, timeout=60)
    assert result == ProbeResult(False, "the process died with SIGSEGV", crashed=True)


def test_probe_reports_a_clean_error_by_its_last_line() -> None:
    result = probe("llamacpp", {"n_thread": 1}, timeout=120)
    assert not result.ok and not result.crashed
    assert "unknown option 'n_thread' (did you mean 'n_threads'?)" in result.detail


@pytest.mark.model
def test_probe_decodes_on_the_real_model() -> None:
    result = probe("llamacpp", {"n_threads": 1}, timeout=300)
    assert result.ok, result.detail
    assert result.detail.startswith("smollm2 answered ")


def test_doctor_command_without_decoding(capsys: pytest.CaptureFixture[str]) -> None:
    from promptdsl.cli import main

    assert main(["doctor", "--no-decode"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("promptdsl\n  version ") and "backend llamacpp\n" in out
    assert out.rstrip().endswith("no problems found")
    assert main(["doctor", "--no-decode", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == [] and "llama.cpp system info" in report["sections"]["backend llamacpp"]


def test_doctor_command_exits_1_with_one_line_per_problem(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from promptdsl.cli import main

    monkeypatch.setattr(doctor, "probe", lambda name, options, **kw: ProbeResult(False, "died with SIGSEGV", True))
    assert main(["doctor"]) == 1
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[-2:] == ["1 problem(s):", "  backend llamacpp: a short decode failed: died with SIGSEGV"]


@pytest.mark.model
def test_doctor_command_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    from promptdsl.cli import main

    code = main(["doctor"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "  decode " in out and "smollm2 answered" in out


def test_diagnostics_that_exit_are_a_problem_line_not_the_end_of_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    from promptdsl_openai import OpenAIBackend

    def exits() -> list[tuple[str, str]]:
        raise SystemExit(4)

    monkeypatch.setattr(OpenAIBackend, "diagnostics", classmethod(lambda cls: exits()))
    report = diagnose(decode=False)
    assert "backend openai: diagnostics failed: it called sys.exit(4)" in report.problems
    assert "backend llamacpp" in report.sections and report.sections["cpu"]  # the rest of the report is there


def test_a_plugin_in_a_misspelled_entry_point_group_is_a_problem_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin declared under 'promptdsl.backend' is silently absent from every listing: doctor says why."""
    with fake_distribution(tmp_path / "site", monkeypatch, "pd-typo", "1.0", "promptdsl.backend",
                           {"typo": "pd_typo:Backend"}, {}):
        problems = diagnose(decode=False).problems
    assert ("entry points in group 'promptdsl.backend' (typo) are read by nothing (did you mean "
            "'promptdsl.backends'?); promptdsl reads 'promptdsl.backends' and 'promptdsl.tools'") in problems
