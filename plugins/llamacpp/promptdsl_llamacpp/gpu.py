"""Where the model runs: every layer on the GPU when llama.cpp was built with one (Metal, CUDA, ...).

llama-cpp-python offloads nothing unless told (``n_gpu_layers=0``), so a Mac build with Metal
or a CUDA build would still run every layer on the CPU. The decision is a pure function of the
``n_gpu_layers`` option and what the build supports, so it is tested without a GPU.
"""

from __future__ import annotations

from typing import Any

from promptdsl.errors import BackendError

#: ``n_gpu_layers`` meaning "all of them" (llama-cpp-python's convention).
ALL_LAYERS = -1


def supports_offload() -> bool:
    """True when this llama.cpp build can run layers on a GPU (``llama_supports_gpu_offload``)."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def gpu_layers(option: Any, supported: bool) -> int:
    """``n_gpu_layers`` for the model: the option when set (0 = CPU only, -1 = all), else all layers
    when the build supports offload and none when it does not."""
    if option is None:
        return ALL_LAYERS if supported else 0
    if isinstance(option, bool) or not isinstance(option, int) or option < ALL_LAYERS:
        raise BackendError(
            f"option 'n_gpu_layers': expected a whole number >= -1 (-1 all layers, 0 CPU only), got {option!r}",
            backend="llamacpp",
            exit_code=2,
        )
    return option


def device(n_gpu_layers: int, n_layers: int | None, supported: bool) -> str:
    """One line saying which device runs the model, for ``promptdsl backends`` and the docs."""
    if not supported:
        return "CPU (this llama.cpp build has no GPU support)"
    if n_gpu_layers == 0:
        return "CPU (n_gpu_layers=0)"
    if n_gpu_layers < 0 or (n_layers is not None and n_gpu_layers >= n_layers):
        return "GPU (all layers)"
    of = f" of {n_layers}" if n_layers is not None else ""
    return f"GPU ({n_gpu_layers}{of} layers), CPU the rest"
