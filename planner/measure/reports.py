"""Measured quality from stored `planner eval` reports: which reports are of a model, and the quality dicts that
replace the table estimate (planner.cost.quality) for the formats they measured.

A report matches a model when it was made from the same source path, or when the model it measured has the same
architecture and shapes (`model_key`): a profile id (`smollm2-135m`) and a local copy of its weights are the same
network, so `recommend -m smollm2-135m` and the TUI use what `planner eval ./SmolLM2-135M` measured. Within one
text, the newest report that measured a format wins; formats measured on different texts are not mixed (a KL
divergence depends on the text), so without a text the newest report's text is used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.models.profiles import load_registry
from planner.models.resolve import resolve_model
from planner.paths import user_data_dir, user_path
from planner.cost.quality import Quality

MEASURED = "measured"
ESTIMATED = "estimated"


def text_sha256(text: str) -> str:
    """The key a report records for its text, so `recommend --eval FILE` finds evaluations of that exact text."""
    import hashlib  # only --eval hashes text; recommend reads stored reports without it

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_key(spec: Any) -> str:
    """Architecture and shapes that make two ModelSpecs the same network (the profile and a local copy of it)."""
    parts = [spec.architecture, f"v{spec.vocab_size}", f"h{spec.hidden_size}", f"l{spec.num_layers}",
             f"a{spec.num_heads}", f"kv{spec.num_kv_heads}", f"i{spec.intermediate_size}"]
    if spec.moe is not None:
        parts.append(f"e{spec.moe.num_experts}x{spec.moe.experts_per_token}")
    return "/".join(str(p) for p in parts)


def describe_source(source: Path | str) -> dict[str, str]:
    """{id, name, key} of the model a source (HF directory or GGUF) holds, read from its headers."""
    spec = resolve_model(str(source), load_registry()).spec
    return {"id": spec.id, "name": spec.name, "key": model_key(spec)}


def _same_path(a: Any, b: Path | str | None) -> bool:
    if not a or b is None:
        return False
    try:
        return user_path(a).resolve() == user_path(b).resolve()
    except OSError:
        return False


def reports_for(reports: Iterable[Mapping[str, Any]], spec: Any, *, source: Path | str | None = None,
                text_sha: str | None = None) -> list[Mapping[str, Any]]:
    """The readable reports of `spec` (same shapes, or made from `source`), of the text `text_sha` when given,
    oldest first."""
    key = model_key(spec)
    out = []
    for r in reports:
        if "error" in r or not isinstance(r.get("results"), list):
            continue
        m = r.get("model") if isinstance(r.get("model"), dict) else {}
        if m.get("key") != key and not _same_path(r.get("source"), source):
            continue
        if text_sha is not None and r.get("text_sha256") != text_sha:
            continue
        out.append(r)
    return sorted(out, key=lambda r: str(r.get("created") or ""))


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def measured_quality(reports: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Format id -> the quality dict a Plan carries (kld, ppl_delta_pct, label, basis, source 'measured', and the
    p99, top-1 agreement, text and report it came from), from reports of one model (`reports_for`)."""
    if not reports:
        return {}
    # One text only: the newest report's (KL divergences on different texts are not comparable).
    newest = reports[-1]
    text_of = newest.get("text_sha256") or newest.get("text")
    out: dict[str, dict[str, Any]] = {}
    for r in reports:
        if (r.get("text_sha256") or r.get("text")) != text_of:
            continue
        results = [x for x in r["results"] if isinstance(x, dict)]
        ref = next((x for x in results if x.get("reference")), None)
        ref_ppl = _finite(ref.get("ppl")) if ref else None
        for x in results:
            kld = _finite(x.get("kld_mean"))
            if x.get("reference") or kld is None or kld < 0 or not isinstance(x.get("format"), str):
                continue
            ppl = _finite(x.get("ppl"))
            ppl_pct = (ppl / ref_ppl - 1) * 100 if ppl and ref_ppl else 0.0
            text = str(r.get("text") or "?")
            basis = (f"measured by planner eval on {text}: {x.get('tokens', '?')} tokens, ctx {r.get('ctx', '?')}, "
                     f"{Path(str(r.get('source', '?'))).name}")
            if isinstance(x.get("method"), str) and x["method"]:  # a weight-only GPU format, run dequantized
                basis += f"; {x['method'][:200]}, run as dequantized weights"
            q = Quality(kld, ppl_pct, "measured", MEASURED, note=basis).as_dict()
            q.update(kld_p99=_finite(x.get("kld_p99")), top1=_finite(x.get("top1")), text=text,
                     report=r.get("path"), created=r.get("created"))
            out[x["format"]] = q  # oldest first: a newer report of the format replaces an older one
    return out


def stored_quality(spec: Any, *, source: Path | str | None = None, text_sha: str | None = None,
                   reports: Sequence[Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Measured quality per format for `spec` from the reports stored under user_data_dir()/eval/ (or `reports`)."""
    pool = load_reports() if reports is None else reports
    return measured_quality(reports_for(pool, spec, source=source, text_sha=text_sha))


def summary(measured: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: which formats carry measured quality and on what text ('' when none)."""
    if not measured:
        return ""
    texts = sorted({str(q.get("text")) for q in measured.values()})
    return f"quality: measured KLD ({kld_list(measured)}) by planner eval on {', '.join(texts)}; other formats estimated"


def kld_list(measured: Mapping[str, Mapping[str, Any]]) -> str:
    """'Q8_0 0.0029, Q4_K_M 0.0438': the measured formats, lowest KL divergence first."""
    return ", ".join(f"{f} {q['kld']:.4f}" for f, q in sorted(measured.items(), key=lambda kv: kv[1]["kld"]))


def check_same_model(source: Path | str, spec: Any) -> None:
    """Refuse to measure a SOURCE that is not the planned model (its KL divergence would be another model's)."""
    got = describe_source(source)
    if got["key"] != model_key(spec):
        raise PlannerError(f"{source} holds {got['name']} ({got['key']}), not {spec.name} ({model_key(spec)}); "
                           "pass the weights of the --model being planned")


# ---------------------------------------------------------------------------------------------- storage
# Here rather than in core: recommend and the TUI read stored reports on their hot path, and core imports numpy.


def results_dir() -> Path:
    """Where finished evaluations are stored (next to the bench calibration records)."""
    return user_data_dir() / "eval"


def load_reports(directory: Path | None = None) -> list[dict[str, Any]]:
    """Stored evaluations, oldest first (for recommend/TUI to show measured KL divergence); unreadable files skipped
    with their path under 'error'."""
    d = directory or results_dir()
    out: list[dict[str, Any]] = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, 4301+ digits
            out.append({"path": str(p), "error": str(exc)})
            continue
        if isinstance(data, dict):
            data["path"] = str(p)
            out.append(data)
    return out
