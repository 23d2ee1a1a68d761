"""Token mappers: which source tokens' attention each target token takes (docs/numerics.md section 6)."""

from __future__ import annotations

import torch

from ..errors import InputError
from ..text import word_token_spans, words_of


def replacement_mapper(tokenizer, source: str, target: str) -> torch.Tensor:
    """M (L, L) with M[i, j] = share of source position i's attention given to target position j.

    Unchanged words map one to one; a changed word with a different token count on each side
    spreads its source positions evenly over its target positions. Source position i always
    maps to its aligned target position j, also after the last changed word (the official
    mapper switches to j -> j there, an indexing defect we do not reproduce).
    """
    source_words, target_words = words_of(source), words_of(target)
    if len(source_words) != len(target_words):
        raise InputError(
            f"replace mode needs prompts with the same number of words ({len(source_words)} vs {len(target_words)})",
            "use --mode refine (or auto) for prompts of different lengths",
        )
    length = tokenizer.model_max_length
    source_spans, target_spans = word_token_spans(tokenizer, source), word_token_spans(tokenizer, target)
    changed = {
        source_spans[k][0]: (source_spans[k], target_spans[k])
        for k in range(len(source_words))
        if source_words[k] != target_words[k] and source_spans[k] and target_spans[k]
    }
    mapper = torch.zeros(length, length)
    i = j = 0
    while i < length and j < length:
        if i in changed:
            src, tgt = changed[i]
            if len(src) == len(tgt):
                mapper[src, tgt] = 1.0
            else:
                for t in tgt:
                    mapper[src, t] = 1.0 / len(tgt)
            i += len(src)
            j += len(tgt)
        else:
            mapper[i, j] = 1.0
            i += 1
            j += 1
    return mapper


def global_alignment(x: list[int], y: list[int]) -> list[int]:
    """Needleman-Wunsch alignment (gap 0, match 1, mismatch -1) -> for each y position, its x position or -1.

    Ties prefer a gap in x ("left"), then a gap in y ("up"), then the diagonal, as the
    official aligner does; the published settings were tuned through that choice.
    """
    LEFT, UP, DIAG = 1, 2, 3
    score = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    trace = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for j in range(1, len(y) + 1):
        trace[0][j] = LEFT
    for i in range(1, len(x) + 1):
        trace[i][0] = UP
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            left, up = score[i][j - 1], score[i - 1][j]
            diag = score[i - 1][j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            best = max(left, up, diag)
            score[i][j] = best
            trace[i][j] = LEFT if best == left else UP if best == up else DIAG
    y_to_x = [-1] * len(y)
    i, j = len(x), len(y)
    while i > 0 or j > 0:
        if trace[i][j] == DIAG:
            i, j = i - 1, j - 1
            y_to_x[j] = i
        elif trace[i][j] == LEFT:
            j -= 1
        else:
            i -= 1
    return y_to_x


def refinement_mapper(tokenizer, source: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, weight), each (L,): target token j takes source token index[j]'s attention with
    weight 1 if it is aligned to one, else keeps its own (weight 0). Positions past the
    target's tokens map to themselves."""
    length = tokenizer.model_max_length
    x = tokenizer(source, truncation=True, max_length=length).input_ids
    y = tokenizer(target, truncation=True, max_length=length).input_ids
    aligned = global_alignment(list(x), list(y))
    index = torch.arange(length)
    weight = torch.ones(length)
    for j, i in enumerate(aligned):
        if i >= 0:
            index[j] = i
        else:
            weight[j] = 0.0
    return index, weight
