"""Build planner/data/capability.csv: one capability record per bundled profile and use, from three public snapshots.

    python benchmarks/build_capability.py LMARENA_TEXT_CSV OPEN_LLM_LEADERBOARD_V2_CSV EVALPLUS_RESULTS_JSON

The inputs (not bundled; the CSV records each row's source and commit):
- chat: the LMArena text leaderboard, snapshot 2025-08-04, as csv/lmarena_text.csv in
  github.com/fboulnois/llm-leaderboard-csv at commit e964e252a171a83b8bf189675ca01406d86bc810;
- reasoning: the Hugging Face Open LLM Leaderboard v2 (retired 2025), csv/huggingface_v2.csv in the same repository at
  commit b2d67d9157535832a3adb35773f3a7c49425059a (its last version);
- coding: EvalPlus HumanEval+ pass@1 (greedy), results.json in github.com/evalplus/evalplus.github.io at commit
  4ebfa0d4b62edb942232c723b9d1641fe1d24780 (2024-12-26).

The mapping below names, per profile, the exact leaderboard row used (the instruct/chat release where the profile is a
base model with the same shapes). A profile without a row gets an explicit no-data record saying why.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

ARENA = ("LMArena text leaderboard snapshot 2025-08-04 (github.com/fboulnois/llm-leaderboard-csv csv/lmarena_text.csv "
         "@ e964e252a171)", "2025-08-04")
OLL = ("Open LLM Leaderboard v2, final snapshot (github.com/fboulnois/llm-leaderboard-csv csv/huggingface_v2.csv "
       "@ b2d67d915753)", "2025-06-09")
EVALPLUS = ("EvalPlus leaderboard results.json (github.com/evalplus/evalplus.github.io @ 4ebfa0d4b62e)", "2024-12-26")
HUMANEVAL_PROBLEMS = 164  # HumanEval(+) has 164 problems (Chen et al. 2021, arXiv 2107.03374)
Z90 = 1.2816  # two-sided 80 % (10-90 %) normal quantile
Z95 = 1.96
# Assumed: the Open LLM Leaderboard v2 publishes no error bars; its four reasoning sets have ~750-5,800 questions each,
# so binomial sampling error on their mean is of the order of 1-2 normalized points.
OLL_HALF_WIDTH = 2.0

CHAT = {  # profile id -> LMArena model name
    "command-r": "Command R (04-2024)", "command-r-plus": "Command R+ (04-2024)", "deepseek-v3": "DeepSeek-V3",
    "deepseek-r1": "DeepSeek-R1", "gemma-7b": "Gemma-7B-it", "gemma-2-2b": "Gemma-2-2b-it", "gemma-2-9b": "Gemma-2-9B-it",
    "gemma-2-27b": "Gemma-2-27B-it", "gemma-3-4b": "Gemma-3-4B-it", "gemma-3-12b": "Gemma-3-12B-it",
    "gemma-3-27b": "Gemma-3-27B-it", "llama-1-13b": "LLaMA-13B", "llama-2-7b": "Llama-2-7B-chat",
    "llama-2-13b": "Llama-2-13b-chat", "llama-2-70b": "Llama-2-70B-chat", "llama-3-8b": "Llama-3-8B-Instruct",
    "llama-3-70b": "Llama-3-70B-Instruct", "llama-3.1-8b": "Meta-Llama-3.1-8B-Instruct",
    "llama-3.1-70b": "Meta-Llama-3.1-70B-Instruct", "llama-3.1-405b": "Meta-Llama-3.1-405B-Instruct-bf16",
    "llama-3.2-1b": "Meta-Llama-3.2-1B-Instruct", "llama-3.2-3b": "Meta-Llama-3.2-3B-Instruct",
    "llama-3.3-70b": "Llama-3.3-70B-Instruct", "mistral-7b-v0.1": "Mistral-7B-Instruct-v0.1",
    "mistral-small-24b": "Mistral-Small-24B-Instruct-2501", "mistral-large-2": "Mistral-Large-2407",
    "mixtral-8x7b": "Mixtral-8x7B-Instruct-v0.1", "mixtral-8x22b": "Mixtral-8x22b-Instruct-v0.1",
    "phi-3-mini-4k": "Phi-3-Mini-4k-Instruct", "phi-3-mini-128k": "Phi-3-Mini-128k-Instruct",
    "phi-3-medium-4k": "Phi-3-Medium-4k-Instruct", "phi-4": "Phi-4", "qwen2.5-72b": "Qwen2.5-72B-Instruct",
    "qwen3-32b": "Qwen3-32B", "qwen3-30b-a3b": "Qwen3-30B-A3B", "qwen3-235b-a22b": "Qwen3-235B-A22B",
    "smollm2-1.7b": "SmolLM2-1.7B-Instruct",
}
REASONING = {  # profile id -> Open LLM Leaderboard v2 model_name (official-provider rows only)
    "command-r": "CohereForAI/c4ai-command-r-v01", "command-r-plus": "CohereForAI/c4ai-command-r-plus",
    "gemma-7b": "google/gemma-7b-it", "gemma-2-2b": "google/gemma-2-2b-it", "gemma-2-9b": "google/gemma-2-9b-it",
    "gemma-2-27b": "google/gemma-2-27b-it", "llama-2-7b": "meta-llama/Llama-2-7b-chat-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-chat-hf", "llama-2-70b": "meta-llama/Llama-2-70b-chat-hf",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-70b": "meta-llama/Meta-Llama-3-70B-Instruct",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-70b": "meta-llama/Llama-3.1-70B-Instruct",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
    "llama-3.3-70b": "meta-llama/Llama-3.3-70B-Instruct", "mistral-7b-v0.1": "mistralai/Mistral-7B-Instruct-v0.1",
    "mistral-7b-v0.3": "mistralai/Mistral-7B-Instruct-v0.3", "mistral-nemo-12b": "mistralai/Mistral-Nemo-Instruct-2407",
    "mistral-small-22b": "mistralai/Mistral-Small-Instruct-2409", "mixtral-8x7b": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "mixtral-8x22b": "mistralai/Mixtral-8x22B-Instruct-v0.1", "phi-3-mini-4k": "microsoft/Phi-3-mini-4k-instruct",
    "phi-3-mini-128k": "microsoft/Phi-3-mini-128k-instruct", "phi-3-medium-4k": "microsoft/Phi-3-medium-4k-instruct",
    "phi-3-medium-128k": "microsoft/Phi-3-medium-128k-instruct", "phi-4": "microsoft/phi-4",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2.5-3b": "Qwen/Qwen2.5-3B-Instruct", "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwen2.5-14b": "Qwen/Qwen2.5-14B-Instruct", "qwen2.5-32b": "Qwen/Qwen2.5-32B-Instruct",
    "qwen2.5-72b": "Qwen/Qwen2.5-72B-Instruct", "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-360m": "HuggingFaceTB/SmolLM2-360M-Instruct", "smollm2-1.7b": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
}
CODING = {  # profile id -> EvalPlus model name
    "command-r-plus": "Command-R+", "deepseek-v3": "DeepSeek-V3 (Nov 2024)", "gemma-7b": "gemma-7b-it",
    "llama-3-8b": "Llama3-8B-instruct", "llama-3-70b": "Llama3-70B-instruct", "llama-3.1-8b": "Llama3.1-8B-instruct",
    "mistral-7b-v0.1": "Mistral-7B", "mixtral-8x7b": "Mixtral-8x7B-Instruct-v0.1",
    "mixtral-8x22b": "Mixtral-8x22B-Instruct-v0.1", "phi-3-mini-4k": "Phi-3-mini-4k-instruct",
}
# Why a profile has no record, where the reason is more than "not on that leaderboard".
NO_DATA_WHY = {
    "gpt-oss-20b": "released 2025-08-05, after the snapshot", "gpt-oss-120b": "released 2025-08-05, after the snapshot",
}
OLL_REASONING = ("bbh", "math", "gpqa", "musr")
COLUMNS = ("model_id", "use", "benchmark", "scale", "score", "score_low", "score_high", "evaluated", "source", "date", "note")


def _arena(path: Path) -> dict[str, dict]:
    return {r["model"]: r for r in csv.DictReader(path.open(encoding="utf-8"))}


def _oll(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in csv.DictReader(path.open(encoding="utf-8")):
        if r["features_is_official_provider"] == "TRUE":
            out.setdefault(r["model_name"], []).append(r)
    return out


def rows(arena_csv: Path, oll_csv: Path, evalplus_json: Path, profile_ids: list[str]) -> list[dict]:
    """Every (profile, use) record: a score with its 10-90 % interval, or an explicit no-data row."""
    arena, oll = _arena(arena_csv), _oll(oll_csv)
    evalplus = json.loads(evalplus_json.read_text(encoding="utf-8"))
    out = []
    for pid in profile_ids:
        rec = {"model_id": pid, "use": "chat"}
        if pid in CHAT:
            a = arena[CHAT[pid]]
            up, down = (float(x) for x in a["95_pct_ci"].replace("+", "").split("/"))
            s = float(a["arena_score"])
            # the published 95 % interval scaled to 10-90 % (normal approximation)
            rec.update(benchmark="LMArena text arena score", scale="elo", score=s,
                       score_low=round(s + down * Z90 / Z95, 1), score_high=round(s + up * Z90 / Z95, 1),
                       evaluated=CHAT[pid], source=ARENA[0], date=ARENA[1], note=f"{a['votes']} votes")
        else:
            rec.update(note="no data: not on the LMArena text leaderboard snapshot "
                            + (f"({NO_DATA_WHY[pid]})" if pid in NO_DATA_WHY else ""), source=ARENA[0], date=ARENA[1])
        out.append(rec)
        rec = {"model_id": pid, "use": "reasoning"}
        if pid in REASONING:
            cands = oll[REASONING[pid]]
            r = next((c for c in cands if c["model_precision"] == "bfloat16"), cands[0])
            s = sum(float(r[f"evaluations_{k}_normalized_score"]) for k in OLL_REASONING) / len(OLL_REASONING)
            rec.update(benchmark="Open LLM Leaderboard v2 mean of BBH, MATH Lvl 5, GPQA, MuSR (normalized)",
                       scale="percent", score=round(s, 2), score_low=round(max(0.0, s - OLL_HALF_WIDTH), 2),
                       score_high=round(s + OLL_HALF_WIDTH, 2), evaluated=f"{REASONING[pid]} ({r['model_precision']})",
                       source=OLL[0], date=OLL[1], note="interval assumed +-2 points (no published error bars)")
        else:
            rec.update(note="no data: not evaluated by the Open LLM Leaderboard v2 (retired before it"
                            + (f"; {NO_DATA_WHY[pid]}" if pid in NO_DATA_WHY else " or too large for it") + ")",
                       source=OLL[0], date=OLL[1])
        out.append(rec)
        rec = {"model_id": pid, "use": "coding"}
        if pid in CODING:
            p = evalplus[CODING[pid]]["pass@1"]["humaneval+"]
            # binomial sampling error over the 164 problems, 10-90 %
            half = Z90 * math.sqrt(p / 100 * (1 - p / 100) / HUMANEVAL_PROBLEMS) * 100
            rec.update(benchmark="HumanEval+ pass@1 (greedy)", scale="percent", score=p,
                       score_low=round(max(0.0, p - half), 1), score_high=round(min(100.0, p + half), 1),
                       evaluated=CODING[pid], source=EVALPLUS[0], date=EVALPLUS[1],
                       note="interval: binomial sampling over 164 problems")
        else:
            rec.update(note="no data: not on the EvalPlus leaderboard", source=EVALPLUS[0], date=EVALPLUS[1])
        out.append(rec)
    return out


def main(argv: list[str]) -> int:
    """Write planner/data/capability.csv from the three snapshot files."""
    if len(argv) != 3:
        print(__doc__)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from planner.models.profiles import load_registry

    ids = [m.id for m in load_registry()]
    out = Path(__file__).resolve().parent.parent / "planner" / "data" / "capability.csv"
    with out.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows(Path(argv[0]), Path(argv[1]), Path(argv[2]), ids):
            w.writerow({k: r.get(k, "") for k in COLUMNS})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
