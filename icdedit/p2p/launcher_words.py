"""The official launcher's word rules (`words: official`), written from what
`running/sd1.5/edit.py` does for each row when `launch_editing_iCD_sd1.5.sh` runs it
(`--is_replacement False`); docs/numerics.md section 10.

- Blend: only the manifest's blend cell, read as the launcher reads it: a cell of exactly one
  space means no blend; otherwise its first two space-separated pieces, one per side (nothing
  else is parsed: a cell `('child', 'lion')` gives the words `('child',` and `'lion')`).
- Amplify: the target's space-separated pieces (punctuation kept: `flower,` is a word) that are
  not among the source's pieces and not one of NLTK's English stop words (compared as written:
  `The` is not `the`), in the target's order, a piece that occurs twice listed twice.
- Mode: replace when both prompts have the same number of pieces, else refine (`choose_mode`'s
  auto, which counts the same pieces).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

STOP_WORDS_FILE = Path(__file__).resolve().parent.parent / "data" / "english_stopwords.txt"
NO_BLEND_CELL = " "  # PIE-Bench's cell for rows without local blend


@cache
def nltk_stop_words() -> frozenset[str]:
    """NLTK's 179 English stop words, shipped with icdedit (no NLTK download at run time)."""
    lines = STOP_WORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def launcher_blend(cell) -> tuple[str, str] | None:
    """A blend cell as the launcher splits it: (source word, target word), or None for no blend
    (the one-space cell; also a missing or empty cell, on which the launcher itself would stop).
    A cell with fewer than two pieces is a ValueError (the launcher fails on it too)."""
    if cell is None or cell == NO_BLEND_CELL or (isinstance(cell, str) and not cell):
        return None
    pieces = str(cell).split(" ")
    if len(pieces) < 2:
        raise ValueError(
            f"blend {cell!r}: the official rules read two space-separated words (source, target), "
            "or a cell of one space for no blend"
        )
    return pieces[0], pieces[1]


def launcher_amplified(source: str, target: str) -> list[str]:
    """The words the launcher amplifies: the target's new words that are not stop words."""
    source_words = source.split(" ")
    stop = nltk_stop_words()
    return [word for word in target.split(" ") if word not in source_words and word not in stop]
