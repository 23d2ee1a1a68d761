"""The official launcher's word rules, an independent reference for the tests (never imports
icdedit). Written from yandex-research/invertible-cd, `running/sd1.5/edit.py` as
`running/sd1.5/launch_editing_iCD_sd1.5.sh` runs it (`--is_replacement False`): for each row of
the benchmark (`utils/loading.load_benchmark`: the CSV's old_caption, edited_caption and
blended_words cells, as pandas reads them), the `else` branch of the editing loop builds
`blend_word`, `eq_params` and `is_replacement`, which `p2p.make_controller` receives.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

OFFICIAL_DATA = Path(__file__).resolve().parent / "data" / "official"
OFFICIAL_MANIFESTS = ("editing_pie_bench_140.csv", "editing_pie_bench_all.csv", "editing_coco.csv")

# nltk.corpus.stopwords.words('english') (nltk_data corpora/stopwords/english, the 179-word
# list before its 2024 revision), which edit.py filters with; in NLTK's order.
NLTK_ENGLISH = tuple(
    """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
    yourselves he him his himself she she's her hers herself it it's its itself they them their
    theirs themselves what which who whom this that that'll these those am is are was were be been
    being have has had having do does did doing a an the and but if or because as until while of at
    by for with about against between into through during before after above below to from up down
    in out on off over under again further then once here there when where why how all any both
    each few more most other some such no nor not only own same so than too very s t can will just
    don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't
    doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't
    needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn
    wouldn't""".split()
)


def find_difference2(word1: str, word2: str) -> list[str]:
    """edit.py's `find_difference2`: the pieces of word2 (split on ' ') not among word1's."""
    splitted_w1 = word1.split(" ")
    splitted_w2 = word2.split(" ")
    out = []
    for i in splitted_w2:
        if i not in splitted_w1:
            out.append(i)
    return out


@dataclass(frozen=True)
class LauncherWords:
    """What edit.py hands `make_controller` for one row (is_replacement False branch)."""

    is_replacement: bool
    blend_word: tuple[tuple[str], tuple[str]] | None  # ((source word,), (target word,))
    amplify_words: tuple[str, ...]  # eq_params["words"], repeats kept
    amplify_values: tuple[float, ...]  # eq_params["values"]

    @property
    def mode(self) -> str:
        return "replace" if self.is_replacement else "refine"


def launcher_words(before: str, after: str, blended_words, amplify_factor: float) -> LauncherWords:
    """edit.py, line by line: the blend from the cell (unless it is exactly ' '), the amplified
    words by `find_difference2` less the stop words, replace when the word counts are equal."""
    blend_word = None
    if blended_words != " ":
        blended_words = blended_words.split(" ")
        blend_word = ((blended_words[0],), (blended_words[1],))
    w = find_difference2(before, after)
    w = [word for word in w if word not in NLTK_ENGLISH]
    is_replacement = len(before.split(" ")) == len(after.split(" "))
    b_w = tuple([i for i in w])
    a_f = tuple([amplify_factor for _ in range(len(w))])
    return LauncherWords(is_replacement, blend_word, b_w, a_f)


def read_official_rows(name: str) -> list[dict]:
    """A shipped official manifest's rows (every cell as written: csv keeps a ' ' cell as ' ')."""
    with open(OFFICIAL_DATA / name, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
