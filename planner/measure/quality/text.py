"""The evaluation text: the user's own file, or the small sample that ships with planner (original prose)."""

from __future__ import annotations

from pathlib import Path

from planner.errors import InvalidInputError, NotFoundError, close_matches
from planner.yamlio import read_text
from planner.paths import user_path

_DATA = Path(__file__).resolve().parents[2] / "data"  # planner/data
DATASETS = {"sample": _DATA / "eval_sample.txt"}  # original prose written for planner, a few thousand tokens
# calibration text for importance matrices, GPTQ and AWQ: the project's own docs, deliberately not the eval sample
CALIB_TEXT = _DATA / "imatrix_calib.txt"
# What GPTQ and AWQ calibrate on by default (planner quantize, planner eval without --calib): public-domain prose
# (planner/data/README.md). Not the project docs above: on SmolLM2-135M, GPTQ calibrated on them was 44 % above
# round to nearest in KLD on held-out prose (damp 0.01), on this text 68 % below (benchmarks/calibrated.py).
GPU_CALIB_TEXT = _DATA / "calib_alice.txt"
MIN_CHARS = 16


SAMPLE_DESCRIPTION = "original prose shipped with planner, a few thousand tokens"


class UnknownDatasetError(NotFoundError):
    """A --dataset name that is not bundled: the message lists the bundled names and how to use another text."""

    def __init__(self, name: str):
        super().__init__("dataset", name, close_matches(name, DATASETS))
        bundled = ", ".join(f"'{n}'" for n in DATASETS)
        if name.lower().replace("_", "-").startswith("wikitext"):
            # Asked for by name in guides; not bundled (planner works offline, and it is not ours to ship).
            self.args = (f"unknown dataset '{name}': WikiText is not bundled; the offline text planner ships is "
                         f"'sample' ({SAMPLE_DESCRIPTION}); to evaluate on WikiText, download its raw test split and "
                         "pass it with --text FILE",)
        else:
            self.args = (f"{self.args[0]} (bundled texts: {bundled}; or pass your own with --text FILE)",)


def dataset_path(name: str) -> Path:
    """The bundled text called `name`."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(name) from None


def load_text(path: Path | str) -> str:
    """Read a UTF-8 text file to evaluate on; empty, binary or non-UTF-8 files are one clear error (exit 2)."""
    path = user_path(path)
    text = read_text(path, "text file")
    if "\x00" in text:
        raise InvalidInputError(f"{path}: contains NUL bytes; expected plain UTF-8 text, not a binary file")
    if not text.strip():
        raise InvalidInputError(f"{path}: the text file is empty; give a file with some plain text to evaluate on")
    if len(text.strip()) < MIN_CHARS:
        raise InvalidInputError(f"{path}: only {len(text.strip())} characters of text; too short to evaluate on")
    return text


def load_dataset(name: str) -> str:
    """The bundled text `name`."""
    return load_text(dataset_path(name))
