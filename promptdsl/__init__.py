"""promptdsl: write a prompt-based task once as a YAML spec, run it on any backend.

    >>> from promptdsl import load_spec, Runner
    >>> spec = load_spec("specs/sentiment.yaml")
    >>> Runner(spec).run({"text": "I love this city!"}).value
    'Positive'
"""

from .backend import Backend, Capability, Constraint, GenerationOptions
from .compiler import compile_prompt
from .errors import BackendError, InputError, OutputError, PromptDSLError, SpecError
from .loader import load_spec, loads_spec
from .prompt import Message, Prompt
from .result import Response, Result
from .runner import Runner, run_spec
from .schema import spec_schema
from .spec import Method, OutputType, Spec

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "Capability",
    "Constraint",
    "GenerationOptions",
    "InputError",
    "Message",
    "Method",
    "OutputError",
    "OutputType",
    "Prompt",
    "PromptDSLError",
    "Response",
    "Result",
    "Runner",
    "Spec",
    "SpecError",
    "compile_prompt",
    "load_spec",
    "loads_spec",
    "run_spec",
    "spec_schema",
]
