"""The one reader of the words that steer Prompt-to-Prompt, as people write them: `--blend` and
`--amplify` on the command line, and a manifest's blend and amplify cells, in every form.

Blend: 'SRCWORD TGTWORD' (PIE-Bench's cell), "('src', 'tgt')" (the official COCO file, a Python
tuple as pandas writes it), '["src", "tgt"]', a two-item list or a list of pairs (JSONL, YAML,
the `--blend SRC TGT` flag). Several words on a side pair every source word with every target
word. Amplify: 'bear=4 hat=2', {'bear': 4}, 'none' (no amplified word), or a plain factor (4)
for the derived words (the `amplify` setting).
"""

from __future__ import annotations

import ast
import math

from .p2p.plan import parse_amplify_item
from .presets import RANGES

BLEND_FORMS = "'SRCWORD TGTWORD', ('src', 'tgt') or [\"src\", \"tgt\"]"


def blend_pairs(sources: str, targets: str) -> list[tuple[str, str]]:
    """Every source word paired with every target word, as `--blend 'pug dog' bear` does."""
    return [(s, t) for s in str(sources).split() for t in str(targets).split()]


def parse_blend(value) -> list[tuple[str, str]] | None:
    """A blend in any of the forms above; blank or empty means none. Anything else: ValueError."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text[0] in "([":
            try:
                value = ast.literal_eval(text)  # literals only: never runs code
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise ValueError(f"blend {text!r} is not {BLEND_FORMS}") from None
        else:
            words = text.split()
            if len(words) != 2:
                raise ValueError(f"blend {text!r} is not {BLEND_FORMS}")
            return [(words[0], words[1])]
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        if len(value) == 2 and all(isinstance(v, str) and v.split() for v in value):
            return blend_pairs(value[0], value[1])
        if all(isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(w, str) for w in v) for v in value):
            return [pair for a, b in value for pair in blend_pairs(a, b)]
    raise ValueError(f"blend {value!r} is not {BLEND_FORMS}")


def is_amplify_words(value) -> bool:
    """An amplify value that names words ('bear=4', {'bear': 4}, 'none'), not a plain factor."""
    return isinstance(value, dict) or (isinstance(value, str) and ("=" in value or value.strip().lower() == "none"))


def parse_amplify(value) -> list[tuple[str, float]] | None:
    """Amplified words: 'bear=4 hat=2' (or comma-separated), {'bear': 4}, or 'none' ([]);
    blank means derived (None). A bad item is a ValueError naming it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dict):
        return [parse_amplify_item(f"{k}={v}") for k, v in value.items()]
    if isinstance(value, str) and value.strip().lower() == "none":
        return []
    return [parse_amplify_item(item) for item in str(value).replace(",", " ").split()]


def parse_amplify_factor(value) -> float:
    """A plain amplify factor for the derived words, within the setting's range (ValueError)."""
    low, high, _ = RANGES["amplify"]
    try:
        factor = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"amplify {value!r} is not WORD=VALUE, a factor or 'none'") from None
    if not math.isfinite(factor) or not low <= factor <= high:
        raise ValueError(f"amplify {value!r}: the value must be a number from {low:g} to {high:g}")
    return factor


def parse_amplify_values(values: list[str] | None) -> tuple[list[tuple[str, float]] | None, float | None]:
    """Repeated `--amplify` values: (words, None) for WORD=VALUE items or 'none'; (None, factor)
    for one plain number (the derived words' factor); (None, None) when absent."""
    if not values:
        return None, None
    if len(values) == 1 and not is_amplify_words(values[0]):
        return None, parse_amplify_factor(values[0])
    return parse_amplify(" ".join(values)), None
