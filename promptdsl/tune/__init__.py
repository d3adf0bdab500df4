"""Instruction tuning: a spec + labelled rows -> a LoRA-tuned GGUF the llamacpp backend runs.

Needs the optional extra (``pip install -e ".[tune]"``: torch, transformers, peft, gguf) and the
llamacpp plugin. Importing this package needs neither; :func:`missing_extra` says what is absent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PromptDSLError, quote

if TYPE_CHECKING:  # the CLI imports this package for its defaults: what runs is imported when it runs
    from ..datafile import DataFile
    from ..dataset import Summary
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

    def training(self, active: bool) -> None:
        """Training (and writing the model) starts (True) or is over (False).

        While it is active, ``stop`` is honoured at the end of the current step, with a checkpoint
        (or after the model is written): stopping at once would lose the work. Outside it
        (set-up, evaluation) nothing is lost by stopping at once; :func:`tune` turns a
        KeyboardInterrupt there into :class:`~promptdsl.tune.train.TuneStopped` (set-up) or an
        interrupted evaluation (the report says so).
        """

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
    #: How each evaluation ran ("before", "after"): its rows, failures and their reasons.
    evaluations: dict[str, Summary] = field(default_factory=dict)
    #: Set when a stop request (Ctrl+C) cut the evaluation short: what was cut. The model is written.
    interrupted: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate_model(
    spec: Spec,
    model: str,
    data: DataFile,
    label: str,
    *,
    threads: int,
    progress: Any = None,
    stop: threading.Event | None = None,
) -> tuple[Metrics, Summary]:
    """Score ``spec`` on ``data`` with the llamacpp backend: the same path as ``promptdsl eval``.

    Returns the metrics and the run's summary (failed rows and why; ``interrupted`` when ``stop``
    was set or Ctrl+C came during the rows)."""
    from ..dataset import DatasetRun
    from ..evaluate import Evaluation
    from ..runner import Runner

    runner = Runner(spec, backend_name="llamacpp", model=model, options={"n_threads": threads})
    evaluation = Evaluation(spec, label)
    summary = DatasetRun(spec, data, runner=runner, cache=False).execute(
        on_outcome=evaluation.on_outcome, progress=progress, stop=stop
    )
    return evaluation.metrics, summary


def check_out(out: Path) -> None:
    """``out`` can be written: its folder exists and takes a file, and it is no folder itself.

    Checked before any model work, so a typo in ``--out`` costs no training."""
    if out.is_dir():
        raise PromptDSLError(f"--out {out} is a folder; give the .gguf file to write")
    folder = out.parent
    if not folder.is_dir():
        raise PromptDSLError(f"--out: folder {folder} does not exist" if not folder.exists()
                             else f"--out: {folder} is not a folder")
    probe = folder / f".{out.name}.{os.getpid()}.probe"
    try:
        probe.open("wb").close()
    except OSError as exc:
        raise PromptDSLError(f"--out: cannot write in {folder}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


def check_out_inputs(
    out: Path, spec: Spec, data: DataFile, eval_data: DataFile | None = None, model: str | None = None
) -> None:
    """``out`` (and its checkpoint, ``out.ckpt``) names a ``.gguf`` file that is none of the files tune
    reads: ``--data``, ``--eval``, the spec and every file it is built from, or the ``--model`` file
    (as given; :func:`tune` checks the model it resolves too). Symlinks and hard links are followed.

    Checked before anything loads, ``--force`` or not: training data overwritten by a model is lost."""
    from ..errors import InputError
    from ..export import _refuse_inputs, _same_file

    if out.suffix.lower() != ".gguf":
        raise InputError(f"--out writes a GGUF model; give it a .gguf name, not {quote(out.name)}")
    if model is not None and _same_file(out, Path(model).expanduser()):
        raise InputError("--out is the model being tuned; give another file")
    inputs: list[tuple[str, Path | None]] = [
        ("the --data file", data.path),
        ("the --eval file", eval_data.path if eval_data is not None else None),
        ("the spec file", spec.path),
        *(("a file the spec is built from (its examples_file or an 'extends' file)", p) for p in spec.files),
    ]
    _refuse_inputs([out, checkpoint_path(out)], [], inputs)


def checkpoint_path(out: Path) -> Path:
    """Where training saves its progress (Ctrl+C, a failed write) for ``--resume``: next to ``out``."""
    return out.with_name(out.name + ".ckpt")


def check_eval_data(spec: Spec, data: DataFile, label: str) -> int:
    """Read the evaluation rows before any model loads: each must be readable and give the spec
    valid inputs, and some row must carry the label. Returns the number of rows."""
    from ..datafile import row_inputs
    from ..errors import InputError, did_you_mean, field_list
    from ..evaluate import check_label_header, unlabelled
    from ..inputs import validate_inputs

    if data.path is None:
        raise InputError("--eval cannot be standard input (tune reads it before training and after); give a file")
    check_label_header(data, label)
    rows = labelled = 0
    fields: set[str] = set()
    for row in data.rows():
        rows += 1
        if row.error is not None:
            raise InputError(f"{row.where()}: {row.error}", source=data.name)
        have = [str(k) for k in row.data]
        fields.update(have[:100])
        for name, schema in spec.inputs.items():
            if name not in row.data and "default" not in schema:
                raise InputError(
                    f"{row.where()}: no field for input '{name}'{did_you_mean(name, have[:1000])}; the row has: "
                    + field_list(have),
                    source=data.name,
                )
        try:
            validate_inputs(spec, row_inputs(spec, row, data.format))
        except InputError as exc:
            raise InputError(f"{row.where()}: {exc.message}", source=data.name) from None
        labelled += not unlabelled(row.data.get(label))
    if not rows:
        raise InputError("no rows to evaluate on", source=data.name)
    if not labelled:
        hint = did_you_mean(label, fields - set(spec.inputs))
        raise InputError(f"--label '{label}': none of the {rows} rows has a value in this field{hint}",
                         source=data.name)
    return rows


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

    Everything the arguments name is checked before any model loads (settings, ``out``'s
    folder, the evaluation rows). With ``eval_data`` the base and the tuned model are both
    evaluated on it afterwards. ``stop`` set (Ctrl+C) stops set-up at the next stage with
    nothing saved, training at the end of the step with a checkpoint, and evaluation after
    the row in flight (the model is written; the report says what was cut).
    """
    missing = missing_extra()
    if missing:
        raise PromptDSLError(
            f"tuning needs the [tune] extra and the llamacpp plugin; missing: {', '.join(missing)} "
            '(pip install -e ".[tune]"; without a GPU, first pip install torch --index-url '
            "https://download.pytorch.org/whl/cpu, or pip fetches a CUDA build of several GB)"
        )
    from .config import MAX_STEPS, TuneConfig, check_threads
    from .errors import TuneError, TuneStopped

    cfg: TuneConfig = config if config is not None else TuneConfig()
    check_threads(threads)
    if label in spec.inputs:
        raise PromptDSLError(f"--label '{label}' is one of the spec's inputs; the label must be a separate field")
    check_out_inputs(out, spec, data, eval_data, model)
    hear = listener or Listener()
    try:
        import torch
        from promptdsl_llamacpp import default_threads, resolve_model

        from ..export import _same_file, compile_rows, file_hash, spec_hash
        from ..registry import backend_class
        from ..runner import spec_model
        from .train import (
            LlamaTokens,
            add_lora,
            check_checkpoint,
            check_finite,
            check_tokenizer,
            encode,
            load_torch_model,
            logits_agree,
            lora_deltas,
            sequences_hash,
            train,
            write_gguf,
        )
    except KeyboardInterrupt:
        raise TuneStopped("stopped before training started (while loading torch); nothing was saved") from None

    n_threads = threads or default_threads()  # the idle cores, judged as for llama.cpp's threads
    torch.set_num_threads(n_threads)
    torch.set_flush_denormal(True)  # denormal floats make CPU training ~10x slower
    base = resolve_model(model or spec_model(spec, backend_class("llamacpp")))  # a spec's: its folder only
    if _same_file(out, base):
        raise TuneError("--out is the model being tuned; give another file")
    check_out(out)
    checkpoint = checkpoint_path(out)
    if resume and not checkpoint.is_file():
        raise TuneError(f"--resume: no checkpoint at {checkpoint}")
    stopped = TuneStopped("stopped before training started; nothing was saved")

    def stage(text: str) -> None:
        if stop is not None and stop.is_set():
            raise stopped
        hear.stage(text)

    try:
        if eval_data is not None:
            if eval_data.path is not None:  # standard input is refused by the check, before any "checking" line
                stage(f"checking the evaluation rows in {eval_data.name}")
            check_eval_data(spec, eval_data, label)
        stage("compiling the training rows")
        rows = list(compile_rows(spec, data, label))
        if not rows:
            raise TuneError(f"{data.name}: no training rows")
        if cfg.total_steps(len(rows)) > MAX_STEPS:
            raise TuneError(f"--epochs {cfg.epochs:g} over {len(rows)} rows is more than {MAX_STEPS:,} steps")
        # What the run is made of: a checkpoint made with anything else is refused on --resume
        # (checked now as far as it can be, before the model loads; the tokens are added below).
        ident: dict[str, Any] = {
            "spec": spec_hash(spec),
            "data": file_hash(data.path) if data.path is not None else "standard input",
            "label": label,
            "model": [str(base.resolve()), base.stat().st_size],
            "settings": {k: v for k, v in cfg.__dict__.items() if k not in ("out_type", "max_tokens")},
            "rows": len(rows),
        }
        if resume:
            check_checkpoint(checkpoint, ident)
        stage(f"tokenizing with llama.cpp ({base.name})")
        tok = LlamaTokens(base, n_threads)
        context = tok.backend.context_length()
        if cfg.max_tokens > context:
            raise TuneError(f"--max-tokens {cfg.max_tokens} is more than the model's context ({context} tokens)")
        seqs = encode(rows, tok, cfg.max_tokens, data.name, stop)
        stage("checking transformers' tokenizer against llama.cpp's ids")
        texts = [tok.text(r.prompt, r.response) for r in rows[:check_rows]]
        tcheck = check_tokenizer(base, texts, tok, stop)
        stage("loading the model into torch")
        gg, torch_model = load_torch_model(base)
        corr = logits_agree(torch_model, tok, seqs[0].tokens[: seqs[0].prompt_len])
        if corr < 0.98:
            raise TuneError(f"the model read into torch does not match llama.cpp (logit correlation {corr:.3f})")
        peft_model = add_lora(torch_model, cfg)
        ident["sequences"] = sequences_hash(seqs)
        stage("training")
    except KeyboardInterrupt:
        raise stopped from None
    hear.training(True)
    try:
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
        deltas = lora_deltas(peft_model, gg)
        check_finite(deltas)
        try:
            write_gguf(gg, out, deltas, cfg.out_type, meta)
        except TuneError as exc:
            raise _saved_for_resume(exc, log.save, checkpoint) from None
    finally:
        hear.training(False)
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
        _evaluate(report, spec, eval_data, label, base, out, n_threads, stop, hear)
    return report


def _saved_for_resume(exc: PromptDSLError, save: Any, checkpoint: Path) -> PromptDSLError:
    """The GGUF could not be written: keep the training in a checkpoint, so --resume only writes."""
    if save is None:
        return exc
    try:
        save()
    except PromptDSLError as again:
        return PromptDSLError(f"{exc}; {again}", exit_code=1)
    return PromptDSLError(
        f"{exc}; the training is saved in {checkpoint}: fix that, then run the same command with --resume",
        exit_code=1,
    )


def _evaluate(
    report: TuneReport,
    spec: Spec,
    eval_data: DataFile,
    label: str,
    base: Path,
    out: Path,
    threads: int,
    stop: threading.Event | None,
    hear: Listener,
) -> None:
    """The before/after evaluations; a stop request cuts them short (the report says so)."""
    for which, path in (("before", str(base)), ("after", str(out))):
        kind = "base" if which == "before" else "tuned"
        if stop is not None and stop.is_set():
            report.interrupted = f"the evaluation of the {kind} model did not run"
            return
        summary = None
        bar = None
        try:
            hear.stage(f"evaluating the {kind} model on {eval_data.name}")
            t0 = time.perf_counter()
            bar = hear.eval_progress(f"{which}: ", eval_data.count())
            metrics, summary = evaluate_model(spec, path, eval_data, label, threads=threads, progress=bar, stop=stop)
        except KeyboardInterrupt:  # while the model loaded, before the rows
            pass
        finally:
            if bar is not None:
                bar.close()
        if summary is None or summary.interrupted:
            report.interrupted = f"the evaluation of the {kind} model was stopped"
            return
        setattr(report, which, metrics)
        report.evaluations[which] = summary
        report.extra[f"eval_{which}_seconds"] = time.perf_counter() - t0


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


__all__ = [
    "Listener",
    "TuneReport",
    "check_eval_data",
    "check_out",
    "check_out_inputs",
    "checkpoint_path",
    "evaluate_model",
    "missing_extra",
    "summary_lines",
    "tune",
]

