"""Instruction tuning: a spec + labelled rows -> a LoRA-tuned GGUF the llamacpp backend runs.

Needs the optional extra (``pip install -e ".[tune]"``: torch, transformers, peft, gguf) and the
llamacpp plugin. Importing this package needs neither; :func:`missing_extra` says what is absent.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PromptDSLError

if TYPE_CHECKING:  # the CLI imports this package for its defaults: what runs is imported when it runs
    from ..datafile import DataFile
    from ..evaluate import Metrics
    from ..spec import Spec

EXTRA = ("torch", "transformers", "peft", "gguf")


def missing_extra() -> list[str]:
    """The modules of the ``[tune]`` extra (and the llamacpp plugin) that are not installed."""
    names = [*EXTRA, "promptdsl_llamacpp", "llama_cpp"]
    return [n for n in names if importlib.util.find_spec(n) is None]


class Listener:
    """What a front end hears while tuning runs (the library itself prints nothing)."""

    def stage(self, text: str) -> None:
        """A new stage starts (loading, checking, training, writing, evaluating)."""

    def step(self, step: int, total: int, loss: float) -> None:
        """A training step finished."""

    def eval_progress(self, label: str, total: int | None) -> Any:
        """A progress sink for an evaluation run (``update(n, cached=, error=)``, ``close()``), or None."""
        return None


@dataclass
class TuneReport:
    out: Path
    steps: int
    losses: list[float]
    train_seconds: float
    rows: int
    tokens: int  # training tokens (prompt + response) over all rows
    tokenizer_mismatches: int
    logits_correlation: float
    out_bytes: int
    peak_rss_mib: float
    before: Metrics | None = None
    after: Metrics | None = None
    resumed_at: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate_model(
    spec: Spec, model: str, data: DataFile, label: str, *, threads: int, progress: Any = None
) -> Metrics:
    """Score ``spec`` on ``data`` with the llamacpp backend: the same path as ``promptdsl eval``."""
    from ..dataset import DatasetRun
    from ..evaluate import Evaluation
    from ..runner import Runner

    runner = Runner(spec, backend_name="llamacpp", model=model, options={"n_threads": threads})
    evaluation = Evaluation(spec, label)
    DatasetRun(spec, data, runner=runner, cache=False).execute(on_outcome=evaluation.on_outcome, progress=progress)
    return evaluation.metrics


def tune(
    spec: Spec,
    data: DataFile,
    label: str,
    out: Path,
    config: Any = None,
    *,
    model: str | None = None,
    eval_data: DataFile | None = None,
    resume: bool = False,
    threads: int | None = None,
    stop: threading.Event | None = None,
    listener: Listener | None = None,
    check_rows: int = 256,
) -> TuneReport:
    """Tune the spec's model (default: the embedded one) on ``data`` and write ``out``.

    With ``eval_data`` the base and the tuned model are both evaluated on it afterwards.
    """
    missing = missing_extra()
    if missing:
        raise PromptDSLError(
            f"tuning needs the [tune] extra and the llamacpp plugin; missing: {', '.join(missing)} "
            '(pip install -e ".[tune]")'
        )
    import torch
    from promptdsl_llamacpp import default_threads, resolve_model

    from ..export import compile_rows, spec_hash
    from .config import TuneConfig
    from .train import (
        LlamaTokens,
        TuneError,
        add_lora,
        check_tokenizer,
        encode,
        fingerprint,
        load_torch_model,
        logits_agree,
        lora_deltas,
        train,
        write_gguf,
    )

    cfg: TuneConfig = config if config is not None else TuneConfig()
    hear = listener or Listener()
    n_threads = threads or default_threads()  # the idle cores, judged as for llama.cpp's threads
    torch.set_num_threads(n_threads)
    torch.set_flush_denormal(True)  # denormal floats make CPU training ~10x slower
    if label in spec.inputs:
        raise PromptDSLError(f"--label '{label}' is one of the spec's inputs; the label must be a separate field")
    base = resolve_model(model or spec.model.model)
    if out.resolve() == base.resolve():
        raise TuneError("--out is the model being tuned; give another file")
    checkpoint = out.with_name(out.name + ".ckpt")
    if resume and not checkpoint.is_file():
        raise TuneError(f"--resume: no checkpoint at {checkpoint}")

    hear.stage("compiling the training rows")
    rows = list(compile_rows(spec, data, label))
    if not rows:
        raise TuneError("no training rows", exit_code=2)
    hear.stage(f"tokenizing with llama.cpp ({base.name})")
    tok = LlamaTokens(base, n_threads)
    seqs = encode(rows, tok, cfg.max_tokens)
    hear.stage("checking transformers' tokenizer against llama.cpp's ids")
    texts = [tok.text(r.prompt, r.response) for r in rows[:check_rows]]
    tcheck = check_tokenizer(base, texts, tok)
    hear.stage("loading the model into torch")
    gg, torch_model = load_torch_model(base)
    corr = logits_agree(torch_model, tok, seqs[0].tokens[: seqs[0].prompt_len])
    if corr < 0.98:
        raise TuneError(f"the model read into torch does not match llama.cpp (logit correlation {corr:.3f})")
    peft_model = add_lora(torch_model, cfg)
    ident = fingerprint([spec_hash(spec), data.name, str(base.resolve()), base.stat().st_size, cfg.__dict__, len(seqs)])
    hear.stage("training")
    log = train(
        peft_model, seqs, cfg, pad=tok.end_of_turn, checkpoint=checkpoint, ident=ident,
        resume=resume, stop=stop, on_step=hear.step,
    )
    hear.stage(f"writing {out}")
    meta = {
        "promptdsl.tune.spec": spec.name,
        "promptdsl.tune.spec_sha256": spec_hash(spec),
        "promptdsl.tune.base": base.name,
        "promptdsl.tune.settings": str({k: v for k, v in cfg.__dict__.items()}),
    }
    write_gguf(gg, out, lora_deltas(peft_model, gg), cfg.out_type, meta)
    checkpoint.unlink(missing_ok=True)
    report = TuneReport(
        out=out,
        steps=len(log.losses),
        losses=log.losses,
        train_seconds=log.seconds,
        rows=len(seqs),
        tokens=sum(len(s.tokens) for s in seqs),
        tokenizer_mismatches=tcheck.mismatches,
        logits_correlation=corr,
        out_bytes=out.stat().st_size,
        peak_rss_mib=peak_rss_mib(),
        resumed_at=log.resumed_at,
        extra={"tokenizer_checked": tcheck.texts, "tokenizer_first_mismatch": tcheck.first},
    )
    del peft_model, torch_model
    if eval_data is not None:
        for which, path in (("before", str(base)), ("after", str(out))):
            hear.stage(f"evaluating the {'base' if which == 'before' else 'tuned'} model on {eval_data.name}")
            t0 = time.perf_counter()
            bar = hear.eval_progress(f"{which}: ", eval_data.count())
            metrics = evaluate_model(spec, path, eval_data, label, threads=n_threads, progress=bar)
            if bar is not None:
                bar.close()
            setattr(report, which, metrics)
            report.extra[f"eval_{which}_seconds"] = time.perf_counter() - t0
    return report


def summary_lines(report: TuneReport) -> list[str]:
    """A short plain-text account of a tuning run (for the CLI and the benchmark)."""
    from ..evaluate import ChoiceMetrics

    losses = report.losses
    lines = [
        f"wrote {report.out} ({report.out_bytes / 2**20:.1f} MiB)",
        f"rows: {report.rows}   training tokens: {report.tokens}   steps: {report.steps}"
        + (f" (resumed at {report.resumed_at})" if report.resumed_at else ""),
        f"training time: {report.train_seconds:.0f} s   peak memory: {report.peak_rss_mib:.0f} MiB",
        f"tokenizer check: {report.extra.get('tokenizer_checked')} texts, {report.tokenizer_mismatches} differ"
        f" from llama.cpp's ids   torch vs llama.cpp logits: r = {report.logits_correlation:.4f}",
    ]
    if losses:
        k = max(1, len(losses) // 10)
        curve = [sum(losses[i : i + k]) / len(losses[i : i + k]) for i in range(0, len(losses), k)]
        lines.append("loss (mean per tenth of the steps): " + " ".join(f"{x:.3f}" for x in curve))
    for which in ("before", "after"):
        m = getattr(report, which)
        if isinstance(m, ChoiceMetrics):
            lines.append(f"{which}: accuracy {m.accuracy:.4f}   macro-F1 {m.macro_f1:.4f}")
        elif m is not None:
            d = m.to_dict()
            lines.append(f"{which}: exact match {d['exact_match']:.4f}   schema-valid {d['schema_valid']:.4f}")
    return lines


__all__ = ["Listener", "TuneReport", "evaluate_model", "missing_extra", "summary_lines", "tune"]

