"""The llamacpp plugin's decisions without loading a model: AMX-safe buffers, declared options,
the model cache key, the model lock. (End to end on the real model: test_llamacpp.py.)"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import promptdsl_llamacpp as plugin
import pytest
from promptdsl_llamacpp import (
    OPTIONS_SCHEMA,
    LlamaCppBackend,
    LoadSettings,
    amx_reason,
    cpu_flags,
    use_extra_bufts,
)

from promptdsl.backend import check_options
from promptdsl.errors import BackendError
from promptdsl.registry import get_backend, list_backends

SAPPHIRE_RAPIDS = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    "flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
)
ZEN3 = "model name\t: AMD EPYC 7763\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp sve\n"
BUILD_PLAIN = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | OPENMP = 1 | REPACK = 1 |"
BUILD_AMX = "CPU : AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 | REPACK = 1 |"


# ---------------------------------------------------------------------------- AMX decision, with fake CPU flags


def test_cpu_flags_are_read_from_cpuinfo() -> None:
    assert {"amx_tile", "amx_int8", "avx2"} <= cpu_flags(SAPPHIRE_RAPIDS)
    assert "amx_tile" not in cpu_flags(ZEN3)
    assert "asimd" in cpu_flags(GRAVITON)
    assert cpu_flags("no flags here") == frozenset()


@pytest.mark.parametrize(("cpuinfo", "build", "expected"), [
    (SAPPHIRE_RAPIDS, BUILD_AMX, False),     # the crashing combination: weights stay in the plain CPU buffer
    (SAPPHIRE_RAPIDS, BUILD_PLAIN, False),   # the CPU alone is enough (a build may still register AMX)
    (ZEN3, BUILD_AMX, False),                # llama.cpp says it has AMX: believe it
    (ZEN3, BUILD_PLAIN, True),               # no AMX anywhere: llama.cpp's own default, nothing lost
    (GRAVITON, BUILD_PLAIN, True),
], ids=["spr-amx-build", "spr-plain-build", "amx-build-only", "zen3", "arm"])
def test_auto_turns_extra_buffers_off_exactly_where_amx_is(cpuinfo: str, build: str, expected: bool) -> None:
    assert use_extra_bufts("auto", cpu_flags(cpuinfo), build) is expected
    assert (amx_reason(cpu_flags(cpuinfo), build) is None) is expected


def test_a_forced_value_wins_over_the_cpu() -> None:
    assert use_extra_bufts(True, cpu_flags(SAPPHIRE_RAPIDS), BUILD_AMX) is True
    assert use_extra_bufts(False, cpu_flags(ZEN3), BUILD_PLAIN) is False


def test_amx_reason_names_what_it_saw() -> None:
    assert amx_reason(cpu_flags(SAPPHIRE_RAPIDS), BUILD_PLAIN) == "the CPU reports amx_bf16, amx_int8, amx_tile"
    assert amx_reason(cpu_flags(ZEN3), BUILD_AMX) == "llama.cpp reports AMX_INT8 = 1"


def test_settings_resolve_auto_from_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "cpu_flags", lambda cpuinfo=None: cpu_flags(SAPPHIRE_RAPIDS))
    monkeypatch.setattr(plugin, "system_info", lambda: BUILD_AMX)
    assert LoadSettings.from_options({}).extra_bufts is False
    assert LoadSettings.from_options({"extra_bufts": True}).extra_bufts is True
    monkeypatch.setattr(plugin, "cpu_flags", lambda cpuinfo=None: cpu_flags(ZEN3))
    monkeypatch.setattr(plugin, "system_info", lambda: BUILD_PLAIN)
    assert LoadSettings.from_options({}).extra_bufts is True


# ---------------------------------------------------------------------------- the option reaches llama_model_params


class RecordingLlama:
    """Stands in for ``llama_cpp.Llama``: builds model params the way ``Llama.__init__`` does, loads
    nothing, and counts how often it was freed."""

    made: ClassVar[list[RecordingLlama]] = []

    def __init__(self, **kwargs: Any) -> None:
        import llama_cpp.llama_cpp as lib

        self.kwargs = kwargs
        self.model_params = lib.llama_model_default_params()
        self.metadata: dict[str, str] = {}
        self.closed = 0
        RecordingLlama.made.append(self)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[RecordingLlama]]:
    import llama_cpp

    RecordingLlama.made = []
    monkeypatch.setattr(llama_cpp, "Llama", RecordingLlama)
    monkeypatch.setattr(plugin, "_models", {})
    yield RecordingLlama


@pytest.mark.parametrize("value", [False, True])
def test_extra_bufts_reaches_llama_model_params(recording: type[RecordingLlama], value: bool) -> None:
    import llama_cpp.llama_cpp as lib

    backend = LlamaCppBackend(None, {"extra_bufts": value, "n_threads": 1})
    llm = recording.made[-1]
    assert backend.llama is llm
    assert llm.model_params.use_extra_bufts is value
    assert lib.llama_model_default_params().use_extra_bufts is True  # patched only while loading


def test_auto_on_an_amx_machine_reaches_llama_model_params(recording: type[RecordingLlama],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "cpu_flags", lambda cpuinfo=None: cpu_flags(SAPPHIRE_RAPIDS))
    LlamaCppBackend(None, {"n_threads": 1})
    assert recording.made[-1].model_params.use_extra_bufts is False


def test_ctrl_c_while_the_model_loads_is_delivered_after_the_load(recording: type[RecordingLlama],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp logs through a Python callback while it loads; a KeyboardInterrupt raised inside a
    ctypes callback is printed and dropped, so Ctrl+C used to be lost."""
    lines: list[int] = []

    @ctypes.CFUNCTYPE(None)
    def log_line() -> None:  # as llama.cpp's log callback: Python called from C
        if not lines:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler at the next bytecode: here
        lines.append(1)

    class Loading(RecordingLlama):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            for _ in range(3):
                log_line()

    import llama_cpp

    monkeypatch.setattr(llama_cpp, "Llama", Loading)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            LlamaCppBackend(None, {"n_threads": 1})
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, previous)
    assert lines == [1, 1, 1]  # the load ran to its end, then the interrupt came


# ---------------------------------------------------------------------------- the cache key: every load setting


def test_every_load_setting_gets_its_own_model(recording: type[RecordingLlama]) -> None:
    a = LlamaCppBackend(None, {"n_threads": 1})
    assert LlamaCppBackend(None, {"n_threads": 1}).llama is a.llama  # same settings: loaded once
    b = LlamaCppBackend(None, {"n_threads": 2})
    c = LlamaCppBackend(None, {"n_threads": 1, "n_batch": 64})
    d = LlamaCppBackend(None, {"n_threads": 1, "extra_bufts": not a.settings.extra_bufts})
    assert len({id(x.llama) for x in (a, b, c, d)}) == 4
    assert b.llama.kwargs["n_threads"] == 2 and b.llama.kwargs["n_threads_batch"] == 2
    assert c.llama.kwargs["n_batch"] == 64


def test_threads_default_from_the_environment(recording: type[RecordingLlama], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugin.THREADS_ENV, "3")
    assert LlamaCppBackend(None, {}).llama.kwargs["n_threads"] == 3
    assert LlamaCppBackend(None, {"n_threads": 1}).llama.kwargs["n_threads"] == 1
    monkeypatch.setenv(plugin.THREADS_ENV, "many")
    with pytest.raises(BackendError, match="PROMPTDSL_LLAMACPP_THREADS must be a positive integer"):
        LlamaCppBackend(None, {})


# ---------------------------------------------------------------------------- declared options


@pytest.mark.parametrize(("options", "message"), [
    ({"n_thread": 2}, "unknown option 'n_thread' (did you mean 'n_threads'?); this backend's options: batch, extra_bufts,"),
    ({"n_threads": "two"}, "option 'n_threads': 'two' is not of type 'integer', 'null'"),
    ({"n_ctx": 0}, "option 'n_ctx': 0 is less than the minimum of 16"),
    ({"extra_bufts": "maybe"}, "option 'extra_bufts': 'maybe' is not one of ['auto', True, False]"),
])
def test_bad_options_are_refused_before_anything_loads(recording: type[RecordingLlama], options: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(BackendError) as err:
        get_backend("llamacpp", None, options)
    assert message in str(err.value) and str(err.value).startswith("llamacpp: ")
    assert err.value.exit_code == 2
    assert recording.made == []


def test_options_are_listed_with_the_backend() -> None:
    info = {i.name: i for i in list_backends()}["llamacpp"]
    assert info.options_schema is OPTIONS_SCHEMA
    assert {"n_ctx", "n_threads", "n_batch", "extra_bufts", "verbose", "n_gpu_layers", "batch"} == set(OPTIONS_SCHEMA["properties"])


def test_undeclared_options_are_not_checked() -> None:
    check_options("legacy", None, {"anything": object()})  # a plugin written before options were declared


def test_schema_allowing_extra_keys_is_respected() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    check_options("open", schema, {"a": 1, "b": 2})
    with pytest.raises(BackendError, match="open: option 'a': 'x' is not of type 'integer'"):
        check_options("open", schema, {"a": "x"})


# ---------------------------------------------------------------------------- the model lock


def test_model_lock_is_released_by_whichever_thread_closes() -> None:
    lock = plugin._ModelLock()
    lock.__enter__()
    closer = threading.Thread(target=lock.__exit__)
    closer.start()
    closer.join(5)
    assert not lock.locked()
    with lock:  # usable again at once
        assert lock.locked()


@pytest.mark.parametrize(("cores", "load", "running", "expected"), [
    (2, 0.3, 5, 2),  # quiet by the average: every core, no closer look
    (2, 1.2, 1, 1),  # another program holds a core: the idle one
    (2, 6.0, 0, 2),  # the average remembers programs that have ended; nothing runs now
    (2, 6.0, None, 1),  # no /proc/loadavg: the average decides
    (8, 3.4, 4, 5),
    (8, 20.0, 30, 1),  # at least one
    (1, 9.0, 9, 1),
])
def test_default_threads_are_the_idle_cores(cores: int, load: float, running: int | None, expected: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "others_running", lambda: None)
    assert plugin.default_threads(cores, load, running) == expected


def test_others_running_reads_proc_loadavg() -> None:
    got = plugin.others_running()
    assert got is None or got >= 0


def _fake_proc(root: Path, running: int, states: str) -> Path:
    root.mkdir()
    (root / "loadavg").write_text(f"1.52 1.10 0.98 {running}/75 4242\n", encoding="ascii")
    for tid, state in enumerate(states, start=100):
        task = root / "self" / "task" / str(tid)
        task.mkdir(parents=True)
        # a thread name may itself hold ") ": the state is the field after the last ")"
        (task / "stat").write_text(f"{tid} (row) {tid}) {state} 1 {tid} {tid} 0 -1\n", encoding="ascii")
    return root


def test_others_running_leaves_out_every_thread_of_this_process(tmp_path: Path) -> None:
    # The reading thread (R) and another thread of ours, such as OpenBLAS's worker (R):
    # 3 runnable tasks on the machine, 2 of them ours, so 1 other program.
    assert plugin.others_running(looks=1, proc=_fake_proc(tmp_path / "a", 3, "RRS")) == 1
    # Nothing else runs: our own two threads alone are not a busy machine (this chose 1 thread).
    assert plugin.others_running(looks=1, proc=_fake_proc(tmp_path / "b", 2, "RSR")) == 0
    # Our reader always counts as running, even if its stat was read while it was being switched out.
    assert plugin.others_running(looks=1, proc=_fake_proc(tmp_path / "c", 2, "SS")) == 1
    assert plugin.others_running(proc=tmp_path / "missing") is None


def test_own_running_sees_a_busy_thread_of_this_process() -> None:
    import hashlib

    stop = threading.Event()
    data = bytes(1 << 20)

    def spin() -> None:  # hashing a large buffer releases the GIL, so this thread stays runnable
        while not stop.is_set():
            hashlib.sha256(data).digest()

    worker = threading.Thread(target=spin, daemon=True)
    worker.start()
    try:
        seen = max(plugin.own_running() for _ in range(50))
    finally:
        stop.set()
        worker.join()
    assert seen >= 2


def test_busy_default_reaches_llama_and_an_explicit_count_wins(
        recording: type[RecordingLlama], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(plugin.THREADS_ENV, raising=False)
    monkeypatch.setattr(plugin, "cpu_count", lambda: 4)
    monkeypatch.setattr(plugin.os, "getloadavg", lambda: (2.2, 2.0, 2.0))
    monkeypatch.setattr(plugin, "others_running", lambda: 2)
    busy = LlamaCppBackend(None, {}).llama.kwargs
    assert (busy["n_threads"], busy["n_threads_batch"]) == (2, 2)
    assert dict(LlamaCppBackend.diagnostics())["threads"].startswith("2 (the idle cores of 4: the machine is busy")
    given = LlamaCppBackend(None, {"n_threads": 3}).llama.kwargs
    assert (given["n_threads"], given["n_threads_batch"]) == (3, 3)
    monkeypatch.setattr(plugin.os, "getloadavg", lambda: (0.2, 0.5, 0.5))
    quiet = LlamaCppBackend(None, {}).llama.kwargs
    assert (quiet["n_threads"], quiet["n_threads_batch"]) == (4, 4)
    assert dict(LlamaCppBackend.diagnostics())["threads"].startswith("4 (every core")


def test_model_lock_refuses_reentry_by_its_owner() -> None:
    lock = plugin._ModelLock()
    with lock, pytest.raises(BackendError, match="unfinished stream"):
        lock.__enter__()
    assert not lock.locked()


def test_doctor_diagnostics_need_no_model(recording: type[RecordingLlama], tmp_path: Path) -> None:
    lines = dict(LlamaCppBackend.diagnostics())
    assert {"llama-cpp-python", "llama.cpp system info", "threads", "extra_bufts (auto)", "embedded model"} <= set(lines)
    assert recording.made == []
