"""GPU offload of the llamacpp backend: the decision, and that it reaches the model, tested without a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from promptdsl_llamacpp.gpu import ALL_LAYERS, device, gpu_layers

from promptdsl.errors import BackendError


@pytest.mark.parametrize(
    ("option", "supported", "expected"),
    [
        (None, True, ALL_LAYERS),  # a Metal/CUDA build: every layer on the GPU by default
        (None, False, 0),  # a CPU build: nothing to offload
        (0, True, 0),  # CPU only, asked for
        (12, True, 12),
        (-1, True, ALL_LAYERS),
        (12, False, 12),  # passed through; llama.cpp keeps everything on the CPU
    ],
)
def test_gpu_layers_decision(option: int | None, supported: bool, expected: int) -> None:
    assert gpu_layers(option, supported) == expected


@pytest.mark.parametrize("bad", [-2, "all", 1.5, True])
def test_gpu_layers_refuses_bad_values(bad: object) -> None:
    with pytest.raises(BackendError, match="n_gpu_layers"):
        gpu_layers(bad, True)


def test_device_line() -> None:
    assert device(ALL_LAYERS, 30, True) == "GPU (all layers)"
    assert device(30, 30, True) == "GPU (all layers)"
    assert device(10, 30, True) == "GPU (10 of 30 layers), CPU the rest"
    assert device(0, 30, True).startswith("CPU")
    assert device(ALL_LAYERS, 30, False) == "CPU (this llama.cpp build has no GPU support)"


class _FakeLlama:
    """Stands in for llama_cpp.Llama: records the keyword arguments (no model is loaded)."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.seen.append(kwargs)
        self.metadata: dict[str, str] = {}


@pytest.mark.parametrize(
    ("supported", "options", "expected"),
    [(True, {}, ALL_LAYERS), (False, {}, 0), (True, {"n_gpu_layers": 0}, 0), (True, {"n_gpu_layers": 7}, 7)],
)
def test_gpu_layers_reach_the_model(
    monkeypatch: pytest.MonkeyPatch, supported: bool, options: dict[str, Any], expected: int
) -> None:
    import llama_cpp
    import promptdsl_llamacpp
    import promptdsl_llamacpp.gpu

    monkeypatch.setattr(llama_cpp, "Llama", _FakeLlama)
    monkeypatch.setattr(promptdsl_llamacpp.gpu, "supports_offload", lambda: supported)
    _FakeLlama.seen.clear()
    promptdsl_llamacpp._LoadedModel(Path("model.gguf"), promptdsl_llamacpp.LoadSettings.from_options(options))
    assert _FakeLlama.seen[0]["n_gpu_layers"] == expected


@pytest.mark.model
def test_real_model_params_get_the_layer_count() -> None:
    """On this CPU-only build: nothing offloaded by default; an explicit count still reaches llama.cpp."""
    from promptdsl_llamacpp.gpu import supports_offload

    from promptdsl.registry import get_backend

    default = get_backend("llamacpp", None, {"n_threads": 1})
    assert default.llama.model_params.n_gpu_layers == (0x7FFFFFFF if supports_offload() else 0)
    cpu = get_backend("llamacpp", None, {"n_threads": 1, "n_gpu_layers": 0})
    assert cpu.llama.model_params.n_gpu_layers == 0
