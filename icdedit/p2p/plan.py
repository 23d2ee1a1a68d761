"""What to control, decided once per edit: words, modes, windows and mappers, as plain tensors.

`derive_edit_words` derives the words not given (icdedit's rules, or the official launcher's); `build_control_plan`
turns prompts and settings into a frozen `ControlPlan` that the attention controller reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError, SettingsError
from ..presets import RANGES
from ..text import word_token_positions, words_of
from .launcher_words import launcher_amplified
from .mappers import refinement_mapper, replacement_mapper

# Common English function words, never amplified by default in refine mode (the official
# script drops NLTK's stop words; this list covers the ones that occur in edit prompts).
STOP_WORDS = frozenset(
    """a an the and or but if then of at by for with about against between into through during before
    after above below to from up down in out on off over under again further once here there when where
    why how all any both each few more most other some such no nor not only own same so than too very
    is are was were be been being have has had having do does did doing i me my we our you your he him
    his she her it its they them their this that these those what which who whom s t can will just
    don should now""".split()
)


def parse_amplify_item(item: str) -> tuple[str, float]:
    """'bear=4' -> ('bear', 4.0); anything else (a value that is not a finite number within the
    amplify range) is a ValueError naming the item."""
    word, sep, number = item.rpartition("=")
    try:
        value = float(number)
    except ValueError:
        value = None
    if not sep or not word or value is None:
        raise ValueError(f"amplify {item!r} is not WORD=VALUE")
    low, high, _ = RANGES["amplify"]
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"amplify {item!r}: the value must be a number from {low:g} to {high:g}")
    return word, value


@dataclass(frozen=True)
class EditWords:
    """The words that steer one target: amplified target words and local-blend word pairs."""

    mode: str  # "replace" or "refine"
    amplify: tuple[tuple[str, float], ...]
    blend_source: tuple[str, ...]
    blend_target: tuple[str, ...]
    derived: bool  # True when icdedit chose the words itself

    def describe(self) -> str:
        amp = ", ".join(f"{w}={v:g}" for w, v in self.amplify) or "none"
        blend = f"{' '.join(self.blend_source)} -> {' '.join(self.blend_target)}" if self.blend_target else "none"
        return f"mode {self.mode}; amplify {amp}; blend {blend}"


def choose_mode(source: str, target: str, mode: str) -> str:
    """auto: replace when both prompts have the same number of words, else refine."""
    same_length = len(words_of(source)) == len(words_of(target))
    if mode == "auto":
        return "replace" if same_length else "refine"
    if mode == "replace" and not same_length:
        raise InputError(
            f"replace mode needs prompts with the same number of words: {source!r} has {len(words_of(source))}, "
            f"{target!r} has {len(words_of(target))}",
            "use --mode refine or --mode auto",
        )
    if mode not in ("replace", "refine"):
        raise SettingsError(f"mode {mode!r} is not one of auto, replace, refine")
    return mode


def derive_edit_words(
    source: str,
    target: str,
    mode: str,
    amplify_factor: float,
    amplify: Sequence[tuple[str, float]] | None = None,
    blend: Sequence[tuple[str, str]] | None = None,
    no_blend: bool = False,
    rules: str = "auto",
) -> EditWords:
    """Explicit words win; missing ones are derived by `rules`. auto: replace mode amplifies and
    blends the words that differ; refine mode amplifies the target's new words that are not stop
    words and blends nothing. official: the launcher's rules (launcher_words.py): its new words
    less NLTK's stop words amplified (a repeated word listed twice), no blend but the given one."""
    mode = choose_mode(source, target, mode)
    src_words, tgt_words = words_of(source), words_of(target)
    if rules == "official":
        pairs, new_words = [], launcher_amplified(source, target)
    elif mode == "replace":
        pairs = [(s, t) for s, t in zip(src_words, tgt_words) if s != t]
        new_words = list(dict.fromkeys(t for _, t in pairs))
    else:
        pairs = []
        new_words = [w for w in tgt_words if w not in src_words and w.lower() not in STOP_WORDS]
        new_words = list(dict.fromkeys(new_words))
    derived_amplify = amplify is None
    derived_blend = blend is None and not no_blend
    if amplify is None:
        amplify = [(w, amplify_factor) for w in new_words]
    if no_blend:
        blend = []
    elif blend is None:
        blend = pairs
    for word, _ in amplify:
        if word not in tgt_words:
            raise InputError(
                f"--amplify word {word!r} is not in the target prompt {target!r}",
                f"the prompt's words are: {', '.join(map(repr, tgt_words))}",
            )
    for src_word, tgt_word in blend:
        if src_word not in src_words:
            raise InputError(
                f"--blend word {src_word!r} is not in the source prompt {source!r}",
                f"the prompt's words are: {', '.join(map(repr, src_words))}",
            )
        if tgt_word not in tgt_words:
            raise InputError(
                f"--blend word {tgt_word!r} is not in the target prompt {target!r}",
                f"the prompt's words are: {', '.join(map(repr, tgt_words))}",
            )
    return EditWords(
        mode=mode,
        amplify=tuple((w, float(v)) for w, v in amplify),
        blend_source=tuple(dict.fromkeys(s for s, _ in blend)),
        blend_target=tuple(dict.fromkeys(t for _, t in blend)),
        derived=derived_amplify or (derived_blend and bool(blend)),
    )


def derive_all_edit_words(
    source: str,
    targets: Sequence[str],
    mode: str,
    amplify_factor: float,
    amplify: Sequence[tuple[str, float]] | None = None,
    blend: Sequence[tuple[str, str]] | None = None,
    no_blend: bool = False,
    rules: str = "auto",
) -> list[EditWords]:
    """`derive_edit_words` for several targets: an explicit amplify word or blend pair applies
    to the targets that contain its (target) word, and must be found in at least one."""
    if len(targets) == 1:
        return [derive_edit_words(source, targets[0], mode, amplify_factor, amplify, blend, no_blend, rules)]
    for word, _ in amplify or ():
        if not any(word in words_of(t) for t in targets):
            raise InputError(
                f"--amplify word {word!r} is in none of the target prompts",
                f"the targets' words are: {', '.join(sorted({w for t in targets for w in words_of(t)}))}",
            )
    for _, word in blend or ():
        if not any(word in words_of(t) for t in targets):
            raise InputError(
                f"--blend word {word!r} is in none of the target prompts",
                f"the targets' words are: {', '.join(sorted({w for t in targets for w in words_of(t)}))}",
            )
    result = []
    for target in targets:
        tgt_words = words_of(target)
        own_amplify = None if amplify is None else [(w, v) for w, v in amplify if w in tgt_words]
        own_blend = None if blend is None else [(s, t) for s, t in blend if t in tgt_words]
        result.append(derive_edit_words(source, target, mode, amplify_factor, own_amplify, own_blend, no_blend, rules))
    return result


@dataclass(frozen=True)
class TargetControl:
    """Control of one target row: its mapper, equalizer and per-step cross window."""

    mode: str
    mapper: torch.Tensor | None  # replace: (L, L), M[source i, target j]
    refine_index: torch.Tensor | None  # refine: (L,) source index per target token
    refine_weight: torch.Tensor | None  # refine: (L,) 1 where aligned, 0 where the token keeps its own
    equalizer: torch.Tensor  # (L,) reweighting factors, 1 for untouched tokens
    cross_alpha: torch.Tensor  # (N + 1, L) per-step weight of the controlled map
    blend_positions: tuple[int, ...]


@dataclass(frozen=True)
class ControlPlan:
    num_steps: int
    targets: tuple[TargetControl, ...]
    self_window: tuple[int, int]  # steps k with start <= k < end replace self-attention
    source_blend_positions: tuple[int, ...]
    blend_threshold: float
    token_count: int  # L, the text encoder's sequence length

    @property
    def blends(self) -> bool:
        return any(t.blend_positions for t in self.targets)

    def cross_active(self, step: int) -> bool:
        return any(bool((t.cross_alpha[step] > 0).any()) for t in self.targets)


def cross_window(cross_replace: float, num_steps: int, length: int) -> torch.Tensor:
    """alpha[k] = 1 for k < int(c * (N + 1)), else 0: N + 1 entries, as the official code builds it."""
    alpha = torch.zeros(num_steps + 1, length)
    alpha[: int(cross_replace * (num_steps + 1))] = 1.0
    return alpha


def self_window(self_replace: float, num_steps: int) -> tuple[int, int]:
    """Steps int(0 * N) <= k < int(r * N) (note: N here, N + 1 for the cross window, as released)."""
    return int(0.0 * num_steps), int(self_replace * num_steps)


def build_control_plan(
    tokenizer,
    source: str,
    targets: Sequence[str],
    words: Sequence[EditWords],
    *,
    num_steps: int,
    cross_replace: float,
    self_replace: float,
    blend_threshold: float,
) -> ControlPlan:
    length = tokenizer.model_max_length
    controls = []
    for target, w in zip(targets, words):
        equalizer = torch.ones(length)
        for word, value in w.amplify:
            equalizer[word_token_positions(tokenizer, target, word)] = value
        if w.mode == "replace":
            mapper, index, weight = replacement_mapper(tokenizer, source, target), None, None
        else:
            mapper, (index, weight) = None, refinement_mapper(tokenizer, source, target)
        blend_positions = tuple(p for word in w.blend_target for p in word_token_positions(tokenizer, target, word))
        controls.append(
            TargetControl(
                w.mode,
                mapper,
                index,
                weight,
                equalizer,
                cross_window(cross_replace, num_steps, length),
                blend_positions,
            )
        )
    source_words = dict.fromkeys(s for w in words for s in w.blend_source)
    source_positions = tuple(p for word in source_words for p in word_token_positions(tokenizer, source, word))
    return ControlPlan(
        num_steps=num_steps,
        targets=tuple(controls),
        self_window=self_window(self_replace, num_steps),
        source_blend_positions=source_positions,
        blend_threshold=blend_threshold,
        token_count=length,
    )
