"""A llama-architecture GGUF into a transformers model and back, without any network.

Loading dequantizes every tensor with ``gguf`` and undoes llama.cpp's Q/K row permutation
(``convert_hf_to_gguf`` interleaves the rotary halves of each head). Writing copies every
tensor the tuning did not change byte for byte, in its original type, and stores each changed
(LoRA-merged) tensor at Q8_0 or F16: re-quantizing a merged tensor to Q4_1 would round most of
the small LoRA change away. All metadata (tokenizer, chat template) is copied unchanged, so
llama.cpp and any llama.cpp server load the result as they load the original.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

#: transformers module suffix -> GGUF tensor name inside ``blk.N.``.
LINEAR = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
OUT_TYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "f16": gguf.GGMLQuantizationType.F16}


class GGUFModelError(Exception):
    """The GGUF is not a llama-architecture model this module can load."""


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' Q/K rows -> llama.cpp's (``convert_hf_to_gguf``'s permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K rows -> transformers' (the inverse of :func:`permute`)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFModel:
    """An opened GGUF: its metadata, tensors and the transformers config it describes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = gguf.GGUFReader(str(path))
        arch = self.field("general.architecture")
        if arch != "llama":
            raise GGUFModelError(f"{path.name}: architecture '{arch}' is not supported (only llama)")
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.n_head = int(self.field("llama.attention.head_count"))
        self.n_head_kv = int(self.field("llama.attention.head_count_kv", self.n_head))
        self.n_layer = int(self.field("llama.block_count"))

    def field(self, key: str, default: Any = None) -> Any:
        f = self.reader.get_field(key)
        if f is None:
            if default is None:
                raise GGUFModelError(f"{self.path.name}: metadata '{key}' is missing")
            return default
        return f.contents()

    def array(self, name: str) -> np.ndarray:
        """A tensor as float32 in llama.cpp's layout (rows = output features)."""
        t = self.tensors[name]
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        return np.asarray(data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)] or [1])

    def config(self) -> Any:
        from transformers import LlamaConfig

        hidden = int(self.field("llama.embedding_length"))
        settings: dict[str, Any] = dict(
            vocab_size=len(self.field("tokenizer.ggml.tokens")),
            hidden_size=hidden,
            intermediate_size=int(self.field("llama.feed_forward_length")),
            num_hidden_layers=self.n_layer,
            num_attention_heads=self.n_head,
            num_key_value_heads=self.n_head_kv,
            head_dim=int(self.field("llama.attention.key_length", hidden // self.n_head)),
            max_position_embeddings=int(self.field("llama.context_length", 2048)),
            rms_norm_eps=float(self.field("llama.attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(self.field("llama.rope.freq_base", 10000.0)),
            tie_word_embeddings="output.weight" not in self.tensors,
            bos_token_id=int(self.field("tokenizer.ggml.bos_token_id", 1)),
            eos_token_id=int(self.field("tokenizer.ggml.eos_token_id", 2)),
            attention_bias=False,
            mlp_bias=False,
        )
        return LlamaConfig(**settings)

    def torch_model(self) -> Any:
        """A float32 ``LlamaForCausalLM`` holding this file's weights."""
        from transformers import LlamaForCausalLM

        config = self.config()
        with torch.device("meta"):
            model: Any = LlamaForCausalLM(config)
        state: dict[str, torch.Tensor] = {
            "model.embed_tokens.weight": self._t("token_embd.weight"),
            "model.norm.weight": self._t("output_norm.weight"),
        }
        if "output.weight" in self.tensors:
            state["lm_head.weight"] = self._t("output.weight")
        for i in range(self.n_layer):
            for hf, gg in {**LINEAR, **NORMS}.items():
                state[f"model.layers.{i}.{hf}.weight"] = self._t(f"blk.{i}.{gg}.weight", hf)
        model.load_state_dict(state, strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # its buffers left meta
        missing = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
        if missing:
            raise GGUFModelError(f"{self.path.name}: no tensor for {missing[0]}")
        model.eval()
        return model

    def _t(self, name: str, hf: str = "") -> torch.Tensor:
        if name not in self.tensors:
            raise GGUFModelError(f"{self.path.name}: tensor '{name}' is missing")
        w = self.array(name)
        if hf == "self_attn.q_proj":
            w = unpermute(w, self.n_head)
        elif hf == "self_attn.k_proj":
            w = unpermute(w, self.n_head_kv)
        return torch.from_numpy(np.array(w, dtype=np.float32, order="C"))  # a writable copy

    def to_gguf_layout(self, hf_module: str, delta: np.ndarray) -> tuple[str, np.ndarray]:
        """``model.layers.N.<linear>`` and a change in transformers' layout -> GGUF name and layout."""
        m = re.fullmatch(r"(?:.*\.)?layers\.(\d+)\.(.+)", hf_module)
        if m is None or m.group(2) not in LINEAR:
            raise GGUFModelError(f"cannot map module '{hf_module}' to a GGUF tensor")
        kind = m.group(2)
        if kind == "self_attn.q_proj":
            delta = permute(delta, self.n_head)
        elif kind == "self_attn.k_proj":
            delta = permute(delta, self.n_head_kv)
        return f"blk.{m.group(1)}.{LINEAR[kind]}.weight", delta

    def write(
        self, out: Path, deltas: Mapping[str, np.ndarray], *, out_type: str = "q8_0", extra: Mapping[str, str] = {}
    ) -> None:
        """Write a copy with ``deltas`` (GGUF name -> change, GGUF layout) added to those tensors."""
        qtype = OUT_TYPES[out_type]
        writer = gguf.GGUFWriter(str(out), arch=str(self.field("general.architecture")))
        alignment = self.reader.get_field("general.alignment")
        if alignment is not None:
            writer.data_alignment = int(alignment.contents())
        for f in self.reader.fields.values():
            if f.name == "general.architecture" or f.name.startswith("GGUF."):
                continue
            sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(f.name, f.contents(), f.types[0], sub_type=sub)
        for key, value in extra.items():
            writer.add_string(key, value)
        for t in self.reader.tensors:
            if t.name in deltas:
                merged = self.array(t.name) + deltas[t.name].astype(np.float32)
                data = merged.astype(np.float16) if qtype == gguf.GGMLQuantizationType.F16 else gguf.quants.quantize(
                    merged, qtype
                )
                writer.add_tensor(t.name, data, raw_dtype=qtype)
            else:
                writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
