"""``echo``: an example promptdsl backend that answers with the prompt's last input.

It shows everything a backend plugin has to get right, without a model:

- declare ``name`` and ``capabilities`` (the runner picks output methods from them);
- implement ``stream`` as a generator, honouring ``max_tokens`` and ``stop``,
  so that closing it early simply stops it;
- raise :class:`~promptdsl.errors.BackendError` for every failure, with
  exit code 2 when the user can fix it;
- declare and read configuration from ``options`` (the spec's ``model.options`` / ``-o``).

The answer is the last user message (chat) or the last paragraph of the text
(completion), split into whitespace-led words that count as tokens. It is
handy for testing spec pipelines offline and deterministically.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from promptdsl.backend import CUT_OFF, Backend, Capability, Constraint, GenerationOptions, options_schema
from promptdsl.errors import BackendError, BackendErrorKind
from promptdsl.prompt import Prompt

__version__ = "0.1.0"

_WORD = re.compile(r"\s*\S+")
DEFAULT_CONTEXT = 4096


class EchoBackend(Backend):
    """Echoes the prompt's last input. Options: ``n_ctx`` (context size in words), ``prefix`` (text to prepend)."""

    name = "echo"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.STREAM})
    options_schema = options_schema({
        "n_ctx": {"type": "integer", "minimum": 1, "default": DEFAULT_CONTEXT, "description": "words"},
        "prefix": {"type": "string", "default": "", "description": "text put before every answer"},
    })

    def __init__(self, model: str | None = None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(model, options)
        try:
            self.n_ctx = int(self.options.get("n_ctx", DEFAULT_CONTEXT))
        except (TypeError, ValueError):
            raise BackendError(
                f"option n_ctx must be an integer, got {self.options['n_ctx']!r}",
                backend=self.name,
                exit_code=2,
            ) from None
        self.prefix = str(self.options.get("prefix", ""))

    @property
    def model_id(self) -> str:
        return self.model or "echo"

    def context_length(self) -> int:
        return self.n_ctx

    def count_tokens(self, prompt: Prompt) -> int:
        text = prompt.text if prompt.mode == "completion" else "\n".join(m.content for m in prompt.messages)
        return len(_WORD.findall(text))

    def _answer(self, prompt: Prompt) -> str:
        if prompt.mode == "chat":
            users = [m.content for m in prompt.messages if m.role == "user"]
            if not users:
                raise BackendError("a chat prompt needs a user message", backend=self.name, exit_code=2)
            return users[-1]
        return prompt.text.rstrip().split("\n\n")[-1]

    def stream(
        self, prompt: Prompt, options: GenerationOptions, constraint: Constraint | None = None
    ) -> Iterator[str]:
        if constraint is not None:  # the runner never asks: no grammar/json_schema capability declared
            raise BackendError("echo cannot constrain its output", backend=self.name, exit_code=2)
        return self._generate(prompt, options)

    def _generate(self, prompt: Prompt, options: GenerationOptions) -> Iterator[str]:
        # A generator: nothing runs until the caller iterates, and close() stops it.
        used = self.count_tokens(prompt)
        if used > self.n_ctx:
            raise BackendError(
                f"the prompt is {used} words but the context holds {self.n_ctx}; shorten the input",
                backend=self.name,
                kind=BackendErrorKind.CONTEXT_LENGTH,  # exit 2; the terminal UI keeps the prompt unsent
            )
        text = self.prefix + self._answer(prompt)
        words = _WORD.findall(text)
        limited = options.max_tokens is not None and len(words) > options.max_tokens
        if options.max_tokens is not None:
            words = words[: options.max_tokens]
        text = "".join(words)
        cut = min((i for i in (text.find(s) for s in options.stop if s) if i >= 0), default=len(text))
        remaining = cut
        for word in words:
            if remaining <= 0:
                return  # a stop string ended it: no cut-off
            yield word[:remaining]
            remaining -= len(word)
        if limited:
            yield CUT_OFF  # max_tokens, not the answer's end, stopped it: the result says "truncated"
