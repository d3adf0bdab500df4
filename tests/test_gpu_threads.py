"""GPU offload and thread defaults of the llamacpp backend: the decisions, tested without a GPU."""

from __future__ import annotations

import pytest

from promptdsl.errors import BackendError
from promptdsl_llamacpp.gpu import ALL_LAYERS, device, gpu_layers
from promptdsl_llamacpp.threads import default_threads


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


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [
        (8, None, 8),
        (8, 0.3, 8),
        (1, 5.0, 1),
    ],
)
def test_default_threads(cores: int, load: float | None, expected: int) -> None:
    assert default_threads(cores, load) == expected
