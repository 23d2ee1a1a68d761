"""Prompt-to-Prompt control data built from the prompts, the way the official code builds it.

An independent reference for the tests: it shares no code with `icdedit` (and never imports
it). It is written from the official iCD repository (yandex-research/invertible-cd):

- `utils/p2p.py`: `get_word_inds`, `get_equalizer`, `get_time_words_attention_alpha` /
  `update_alpha_time_word`, `AttentionControlEdit.__init__` (self window), `LocalBlend.__init__`
  (blend word rows), `make_controller` (which controller, which words);
- `utils/seq_aligner.py`: `get_word_inds`, `get_replacement_mapper_` / `get_replacement_mapper`,
  `global_align`, `get_aligned_sequences`, `get_mapper` / `get_refinement_mapper`;
- `running/sd1.5/edit.py`: how the launcher chooses replace or refine and passes
  `cross_replace_steps={'default_': c}`, a float `self_replace_steps`, blend words and
  `eq_params`.

Each piece is re-written here, following the official operations where they decide the
result (tie order of the alignment, `int(c * (N + 1))` for the cross window but `int(N * r)`
for the self window, the ratio used when a changed word has different token counts, ...).
The one deliberate exception, selectable, is the official replacement mapper's indexing
defect after the last changed word (docs/numerics.md section 6).

Where the official code only handles one target, or fails, this file does what docs/numerics.md asks:
`make_controller` builds one equalizer from prompts[1] and `LocalBlend` fills only as many rows
as word lists it is given, while here each target gets its own equalizer and blend row; a word
found in no prompt is a ValueError here (the official code ignores it); integer windows are
accepted (the official `type(...) is float` tests reject them). Token positions past 76 (prompts
over 77 tokens) are not dropped, as in the official code.

The result feeds `OfficialStyleController` (tests/reference.py): `mappers`, `equalizers`,
`cross_alpha`, `self_steps` and `blend_words` have exactly the shapes and meaning it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "OfficialPlan",
    "official_plan",
    "word_positions",
    "replacement_mapper",
    "refinement_mapper",
    "global_alignment",
    "equalizer",
    "cross_alpha",
    "self_steps",
    "blend_rows",
    "launcher_mode",
]


# ---------------------------------------------------------------------------------------------
# Words -> token positions
# ---------------------------------------------------------------------------------------------
def word_positions(tokenizer, text: str, word_place: int | str) -> list[int]:
    """Token positions (0 = start token) of a word of `text`: the word's index among the
    space-separated pieces, or a word string (every occurrence). Missing word -> [].

    Reproduces `get_word_inds` (utils/p2p.py, utils/seq_aligner.py): the prompt is encoded
    without padding or truncation, each inner token decoded on its own with '#' stripped, and
    the decoded lengths are accumulated against the current word's length; a token belongs
    to the current word, and the word advances once the accumulated length reaches its length.
    """
    pieces = text.split(" ")
    if isinstance(word_place, str):
        wanted = {k for k, piece in enumerate(pieces) if piece == word_place}
    else:
        wanted = {int(word_place)}
    found: list[int] = []
    if not wanted:
        return found
    ids = tokenizer.encode(text)
    decoded = [tokenizer.decode([t]).strip("#") for t in ids][1:-1]  # drop start / end tokens
    consumed = 0
    current = 0
    for position, piece in enumerate(decoded):
        consumed += len(piece)
        if current in wanted:
            found.append(position + 1)
        if consumed >= len(pieces[current]):  # official: IndexError if tokens outrun the words
            current += 1
            consumed = 0
    return found


# ---------------------------------------------------------------------------------------------
# Replace mode: the (L, L) mapper, M[source i, target j]
# ---------------------------------------------------------------------------------------------
def replacement_mapper(tokenizer, source: str, target: str, official_defect: bool, length: int | None = None):
    """Follows `seq_aligner.get_replacement_mapper_`.

    Walk source position i and target position j together. At the first token of a changed
    word (a word index where the two prompts differ): equal token counts map pairwise;
    otherwise every source token of the word goes to every target token with weight
    1 / (number of target tokens); both cursors jump past the word. Before and between changed
    words: M[i, j] = 1 and both advance. After the last changed word the official code writes
    M[j, j] = 1 (`official_defect=True`); with `official_defect=False` it keeps M[i, j] = 1.
    The walk stops when either cursor reaches L (so trailing rows / columns may stay empty).
    """
    length = tokenizer.model_max_length if length is None else length
    src_words, tgt_words = source.split(" "), target.split(" ")
    if len(src_words) != len(tgt_words):
        # official: ValueError, replace needs the same number of words
        raise ValueError(
            f"replace mode needs prompts with the same number of words: {source!r} has {len(src_words)}, "
            f"{target!r} has {len(tgt_words)}"
        )
    changed = [k for k in range(len(tgt_words)) if tgt_words[k] != src_words[k]]
    src_spans = [word_positions(tokenizer, source, k) for k in changed]
    tgt_spans = [word_positions(tokenizer, target, k) for k in changed]
    for k, s, t in zip(changed, src_spans, tgt_spans):
        if not s or not t:  # official: IndexError on inds_source[cur][0]
            raise ValueError(f"changed word {k} ({src_words[k]!r} -> {tgt_words[k]!r}) has no tokens")
    # official builds it in numpy float64 and returns .float(); do the same arithmetic
    mapper = torch.zeros(length, length, dtype=torch.float64)
    i = j = 0
    nxt = 0  # next changed word to meet
    while i < length and j < length:
        if nxt < len(src_spans) and src_spans[nxt][0] == i:
            s, t = src_spans[nxt], tgt_spans[nxt]
            if len(s) == len(t):
                mapper[s, t] = 1.0  # pairwise: s[0]->t[0], s[1]->t[1], ...
            else:
                share = 1 / len(t)
                for col in t:
                    mapper[s, col] = share
            nxt += 1
            i += len(s)
            j += len(t)
        elif nxt < len(src_spans) or not official_defect:
            mapper[i, j] = 1.0
            i += 1
            j += 1
        else:  # the official defect: after the last changed word, target j reads source j
            mapper[j, j] = 1.0
            i += 1
            j += 1
    return mapper.float()


# ---------------------------------------------------------------------------------------------
# Refine mode: global alignment -> (index, weight), each (L,)
# ---------------------------------------------------------------------------------------------
_LEFT, _UP, _DIAG, _STOP = 1, 2, 3, 4  # official trace-back codes


def global_alignment(x: Sequence[int], y: Sequence[int]) -> list[int]:
    """For each position of y, the aligned position of x, or -1 (y token against a gap).

    Follows `seq_aligner.global_align` + `get_aligned_sequences` with ScoreParams(gap=0,
    match=1, mismatch=-1): the first row/column of the trace-back point left/up, [0, 0] stops;
    each cell takes max(left, up, diag) and records, on ties, LEFT first, then UP, then DIAG.
    The walk back records (j, i) on a diagonal, (j, -1) on LEFT, nothing on UP.
    """
    gap, match, mismatch = 0, 1, -1
    rows, cols = len(x) + 1, len(y) + 1
    score = [[0] * cols for _ in range(rows)]
    trace = [[0] * cols for _ in range(rows)]
    for jj in range(1, cols):
        score[0][jj] = jj * gap
        trace[0][jj] = _LEFT
    for ii in range(1, rows):
        score[ii][0] = ii * gap
        trace[ii][0] = _UP
    trace[0][0] = _STOP
    for ii in range(1, rows):
        for jj in range(1, cols):
            left = score[ii][jj - 1] + gap
            up = score[ii - 1][jj] + gap
            diag = score[ii - 1][jj - 1] + (match if x[ii - 1] == y[jj - 1] else mismatch)
            best = max(left, up, diag)
            score[ii][jj] = best
            trace[ii][jj] = _LEFT if best == left else _UP if best == up else _DIAG
    pairs: list[tuple[int, int]] = []  # (y position, x position or -1), collected backwards
    ii, jj = len(x), len(y)
    while ii > 0 or jj > 0:
        code = trace[ii][jj]
        if code == _DIAG:
            ii, jj = ii - 1, jj - 1
            pairs.append((jj, ii))
        elif code == _LEFT:
            jj -= 1
            pairs.append((jj, -1))
        elif code == _UP:
            ii -= 1
        else:
            break
    pairs.reverse()
    assert [p[0] for p in pairs] == list(range(len(y)))
    return [p[1] for p in pairs]


def refinement_mapper(tokenizer, source: str, target: str, length: int | None = None):
    """(index, weight) for one target, following `seq_aligner.get_mapper`.

    Both prompts are encoded without padding (start and end tokens included) and aligned.
    For the target's own positions: index = aligned source position, or -1 where unaligned
    (the official value; its weight is 0, and as an index -1 reads the last position);
    weight = 1 where aligned, else 0. Past the target's length: index = the position itself,
    weight = 1.
    """
    length = tokenizer.model_max_length if length is None else length
    x = list(tokenizer.encode(source))
    y = list(tokenizer.encode(target))
    if len(y) > length:  # official: a shape error
        raise ValueError(f"target {target!r} has {len(y)} tokens, more than {length}")
    aligned = global_alignment(x, y)
    index = torch.zeros(length, dtype=torch.int64)
    index[: len(y)] = torch.tensor(aligned, dtype=torch.int64)
    index[len(y) :] = len(y) + torch.arange(length - len(y))
    weight = torch.ones(length)
    weight[: len(y)] = torch.tensor(aligned, dtype=torch.int64).ne(-1).float()
    return index, weight


# ---------------------------------------------------------------------------------------------
# Amplify, windows, blend rows
# ---------------------------------------------------------------------------------------------
def equalizer(tokenizer, text: str, amplify: Sequence[tuple[str, float]], length: int | None = None):
    """(L,) ones, the positions of each amplified word of `text` set to its factor, in order
    (a later word overwrites an earlier one). Follows `p2p.get_equalizer`; a word absent from
    `text` changes nothing."""
    length = tokenizer.model_max_length if length is None else length
    eq = torch.ones(length)
    for word, value in amplify:
        eq[word_positions(tokenizer, text, word)] = value
    return eq


def cross_alpha(num_steps: int, num_targets: int, cross_replace: float, length: int) -> torch.Tensor:
    """(N + 1, n, L). Follows `p2p.get_time_words_attention_alpha` called with
    {'default_': c} and `update_alpha_time_word` with bounds (0, c): the window is
    [int(0 * (N + 1)), int(c * (N + 1))) over the N + 1 rows, for every target and token."""
    alpha = torch.zeros(num_steps + 1, num_targets, length)
    rows = alpha.shape[0]
    start, end = int(0.0 * rows), int(float(cross_replace) * rows)
    for target in range(num_targets):
        alpha[:start, target, :] = 0
        alpha[start:end, target, :] = 1
        alpha[end:, target, :] = 0
    return alpha


def self_steps(num_steps: int, self_replace: float) -> tuple[int, int]:
    """Follows `AttentionControlEdit.__init__`: a float r becomes (0, r), then
    (int(N * 0), int(N * r)): steps, not N + 1 rows."""
    return int(num_steps * 0.0), int(num_steps * float(self_replace))


def blend_rows(tokenizer, prompts: Sequence[str], words: Sequence[Sequence[str]], length: int | None = None):
    """(len(prompts), L): row p has 1 at the positions of words[p] in prompts[p].
    Follows `LocalBlend.__init__` (alpha_layers); a word absent from its prompt adds nothing."""
    length = tokenizer.model_max_length if length is None else length
    rows = torch.zeros(len(prompts), length)
    for p, (prompt, row_words) in enumerate(zip(prompts, words)):
        if isinstance(row_words, str):
            row_words = [row_words]
        for word in row_words:
            rows[p, word_positions(tokenizer, prompt, word)] = 1
    return rows


def launcher_mode(source: str, target: str) -> str:
    """running/sd1.5/edit.py: replace when both prompts have the same number of
    space-separated words, else refine."""
    return "replace" if len(source.split(" ")) == len(target.split(" ")) else "refine"


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OfficialPlan:
    mappers: list  # per target: ("replace", M (L, L)) or ("refine", (index (L,), weight (L,)))
    equalizers: list  # per target: (L,)
    cross_alpha: torch.Tensor  # (N + 1, n, L)
    self_steps: tuple[int, int]  # start <= k < end
    blend_words: torch.Tensor | None  # (1 + n, L) or None


def official_plan(
    tokenizer,
    source: str,
    targets: list[str],
    *,
    num_steps: int,
    cross_replace: float,
    self_replace: float,
    amplify: Sequence[tuple[str, float]] = (),
    blend: tuple[Sequence[str], Sequence[str]] | None = None,
    mode: str | None = None,
    official_defect: bool = False,
) -> OfficialPlan:
    """The P2P control data for `source` -> each of `targets`, as `p2p.make_controller` builds it.

    - mode None: the launcher's rule per target (same word count -> replace, else refine);
      "replace" / "refine" force it (replace with different word counts: ValueError, as the
      official mapper raises).
    - Mappers: each target against the source, as `get_replacement_mapper` /
      `get_refinement_mapper` do for a prompt list.
    - amplify: (word, factor) pairs, looked up in each target prompt (`get_equalizer`).
    - blend: (source words, target words): row 0 the source words in the source, row 1 + i the
      target words in target i (`LocalBlend`); None, or both lists empty -> no blend.

    Words are matched by exact equality with the space-separated pieces. The official code
    ignores a word it cannot find; here a word found in no prompt it applies to is a
    ValueError (docs/numerics.md section 6), so a test cannot silently exercise nothing.
    """
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if not targets:
        raise ValueError("no target prompts")
    if mode not in (None, "replace", "refine"):
        raise ValueError(f"mode {mode!r} is not None, 'replace' or 'refine'")
    length = tokenizer.model_max_length

    mappers = []
    for target in targets:
        kind = launcher_mode(source, target) if mode is None else mode
        if kind == "replace":
            mappers.append(("replace", replacement_mapper(tokenizer, source, target, official_defect, length)))
        else:
            mappers.append(("refine", refinement_mapper(tokenizer, source, target, length)))

    amplify = [(word, float(value)) for word, value in amplify]
    for word, _ in amplify:
        if not any(word in t.split(" ") for t in targets):
            raise ValueError(f"amplify word {word!r} is in none of the targets {targets!r}")
    equalizers = [equalizer(tokenizer, target, amplify, length) for target in targets]

    blend_words = None
    if blend is not None:
        src_words, tgt_words = list(blend[0]), list(blend[1])
        for word in src_words:
            if word not in source.split(" "):
                raise ValueError(f"blend word {word!r} is not in the source {source!r}")
        for word in tgt_words:
            if not any(word in t.split(" ") for t in targets):
                raise ValueError(f"blend word {word!r} is in none of the targets {targets!r}")
        if src_words or tgt_words:
            blend_words = blend_rows(tokenizer, [source, *targets], [src_words] + [tgt_words] * len(targets), length)

    return OfficialPlan(
        mappers=mappers,
        equalizers=equalizers,
        cross_alpha=cross_alpha(num_steps, len(targets), cross_replace, length),
        self_steps=self_steps(num_steps, self_replace),
        blend_words=blend_words,
    )
