"""promptdsl backend for OpenAI and OpenAI-compatible servers (entry point ``openai``)."""

from __future__ import annotations

from .backend import OpenAIBackend

__all__ = ["OpenAIBackend"]
