"""`planner recommend --eval FILE`: rank by the KL divergence planner eval measured on FILE, not by the table.

Like `--confirm` for speed, this confirms the recommendation for quality. Stored reports of the model on that text
(planner eval --text FILE) are used as they are; with the model's weights (--quantize SOURCE, or --model given as a
path) the top candidates' formats that have no measurement yet are quantized and measured through llama.cpp, the
plans re-ranked, and again while the new top choice is an unmeasured format (a few rounds at most). Every new
evaluation is stored like `planner eval`'s, so the next run reuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import InvalidInputError
from planner.measure.quality.core import REFERENCE_FORMAT, evaluate, measurable, save_report
from planner.measure.quality.text import load_text
from planner.measure.reports import check_same_model, load_reports, measured_quality, reports_for, text_sha256
from planner.native import NativeCrash
from planner.paths import user_path

TOP = 3  # candidates measured per round, one per format (as --confirm benches three)
MAX_ROUNDS = 3  # re-rank and measure the new top choice at most this often


@dataclass
class QualityConfirmation:
    """What recommend --eval used: the text, the measured quality per format, and the reports it came from."""

    text: str  # the file as given
    text_sha256: str
    measured: dict[str, dict[str, Any]]
    evaluated: list[str] = field(default_factory=list)  # formats measured during this run
    saved: list[str] = field(default_factory=list)  # reports written during this run
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (recommend --json --eval)."""
        return {"text": self.text, "text_sha256": self.text_sha256, "source": self.source,
                "formats": {f: {"kld": q["kld"], "kld_p99": q.get("kld_p99"), "top1": q.get("top1"),
                                "ppl_delta_pct": q["ppl_delta_pct"], "report": q.get("report")}
                            for f, q in sorted(self.measured.items())},
                "evaluated_now": list(self.evaluated), "saved": list(self.saved)}


def weights_source(model_arg: str, quantize: Path | None) -> Path | None:
    """The weights to measure: --quantize SOURCE, else --model when it is a model directory or a .gguf file."""
    if quantize is not None:
        return quantize
    p = user_path(model_arg)
    if p.is_dir() or (p.is_file() and p.suffix.lower() == ".gguf"):
        return p
    return None


def no_measurement_error(model_name: str, text_file: Path) -> InvalidInputError:
    """The one-line error when there is nothing to measure with and nothing stored."""
    return InvalidInputError(
        f"--eval {text_file}: no stored planner eval of {model_name} on this text and no weights to measure; pass "
        f"--quantize SOURCE -o OUT (or --model PATH to the weights), or run `planner eval SOURCE --text {text_file}` first")


def to_measure(plans: Sequence[Any], measured: dict[str, dict[str, Any]], top: int = TOP) -> list[str]:
    """Formats of the top `top` fitting plans (one per format) that planner eval can measure and has not."""
    out: list[str] = []
    seen: set[str] = set()
    for p in plans:
        if not p.fits or p.format_id in seen:
            continue
        seen.add(p.format_id)
        if p.format_id not in measured and p.format_id != REFERENCE_FORMAT and measurable(p.format_id):
            out.append(p.format_id)
        if len(seen) == top:
            break
    return out


def confirm_quality(rank: Callable[[dict[str, dict[str, Any]]], Any], spec: Any, text_file: Path, *,
                    source: Path | None, ctx: int = 512, max_chunks: int | None = None, save: bool = True,
                    progress: Callable[[str], None] | None = None) -> tuple[Any, QualityConfirmation]:
    """(recommendation ranked with measured quality, what was used). `rank(measured)` runs recommend()."""
    say = progress or (lambda _m: None)
    text = load_text(text_file)
    sha = text_sha256(text)
    if source is not None:
        check_same_model(source, spec)  # before minutes of quantizing the wrong model
    stored = list(reports_for(load_reports(), spec, source=source, text_sha=sha))
    conf = QualityConfirmation(str(text_file), sha, measured_quality(stored), source=str(source) if source else None)
    if source is None and not conf.measured:
        raise no_measurement_error(spec.name, text_file)
    rec = rank(conf.measured)
    for _ in range(MAX_ROUNDS if source is not None else 0):
        want = to_measure(rec.plans, conf.measured)
        if not want:
            break
        say(f"measuring {', '.join(want)} on {text_file} with llama.cpp (planner eval)")
        report = evaluate(source, want, text, text_name=str(text_file), ctx=ctx, max_chunks=max_chunks,
                          flags=("--eval-ctx", "--eval-chunks"))
        if save and report.results:
            conf.saved.append(str(save_report(report)))
        fresh = report.as_dict()
        fresh["path"] = conf.saved[-1] if save and report.results else None
        stored.append(fresh)
        conf.measured = measured_quality(stored)
        conf.evaluated += [r.format for r in report.results if not r.reference]
        rec = rank(conf.measured)
        if report.crash:  # llama.cpp crashed: what was measured is stored; nothing more can be measured here
            kept = f" (the formats measured before it are saved to {conf.saved[-1]})" if save and conf.saved else ""
            raise NativeCrash(report.crash + kept)
        if report.interrupted:
            raise KeyboardInterrupt
    return rec, conf
