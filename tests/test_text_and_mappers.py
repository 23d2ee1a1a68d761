import pytest
import torch

from icdedit.errors import InputError
from icdedit.p2p.mappers import global_alignment, refinement_mapper, replacement_mapper
from icdedit.p2p.plan import cross_window, derive_all_edit_words, derive_edit_words, self_window
from icdedit.text import truncation_warning, word_token_positions, word_token_spans


@pytest.fixture(scope="module")
def tok(editor):
    return editor.tokenizer


def test_multi_token_words_map_to_all_their_positions(tok):
    # the tiny vocabulary has 'cat' as one token and spells 'raccoon' in six
    spans = word_token_spans(tok, "a photo of a raccoon")
    assert spans[:4] == [[1], [2], [3], [4]]
    assert spans[4] == [5, 6, 7, 8, 9, 10]
    assert word_token_positions(tok, "a cat and a cat", "cat") == [2, 5]
    assert word_token_positions(tok, "a photo of a cat", "a") == [1, 4]


def test_punctuation_belongs_to_its_word(tok):
    spans = word_token_spans(tok, "a cat, sitting")
    assert spans[0] == [1] and len(spans[1]) == 2  # 'cat' and ','


def test_word_not_in_prompt_lists_the_prompts_words(tok):
    with pytest.raises(InputError) as info:
        word_token_positions(tok, "a photo of a cat.", "cat")
    assert "'cat.'" in info.value.hint and "'photo'" in info.value.hint


def test_long_prompts_are_reported_as_truncated(tok):
    assert truncation_warning(tok, "a photo of a cat") is None
    message = truncation_warning(tok, " ".join(["cat"] * 100))
    assert "102 tokens" in message and "truncated" in message
    spans = word_token_spans(tok, " ".join(["cat"] * 100))
    assert spans[74] == [75] and spans[75] == []  # past the 77-token window: no positions


def test_replacement_mapper_same_token_counts_is_identity(tok):
    m = replacement_mapper(tok, "a photo of a cat", "a photo of a dog")
    assert torch.equal(m, torch.eye(77))


def test_replacement_mapper_spreads_a_multi_token_word_evenly(tok):
    m = replacement_mapper(tok, "a cat on the grass", "a raccoon on the grass")
    assert torch.allclose(m[2, 2:8], torch.full((6,), 1 / 6))  # 'cat' -> six 'raccoon' tokens
    assert m[2].sum().item() == pytest.approx(1.0)


def test_replacement_mapper_keeps_alignment_after_the_last_changed_word(tok):
    # the official mapper maps target j to source j here; icdedit maps source i to target j
    m = replacement_mapper(tok, "a cat on the grass", "a raccoon on the grass")
    assert m[3, 8] == 1 and m[4, 9] == 1 and m[5, 10] == 1  # 'on', 'the', 'grass'
    assert m[8, 8] == 0
    assert torch.equal(m.sum(1)[:7], torch.ones(7))


def test_replacement_needs_equal_word_counts(tok):
    with pytest.raises(InputError, match="same number of words"):
        replacement_mapper(tok, "a cat", "a big cat")


def test_global_alignment_tie_breaks_like_the_official_aligner():
    assert global_alignment([1, 2, 3], [1, 2, 3]) == [0, 1, 2]
    assert global_alignment([1, 3], [1, 2, 3]) == [0, -1, 1]  # inserted token
    # a tie between gap-in-source and the diagonal mismatch: 'left' (gap in source) wins
    assert global_alignment([1, 2, 4], [1, 3, 4]) == [0, -1, 2]


def test_refinement_mapper_inserted_words_keep_their_own_attention(tok):
    index, weight = refinement_mapper(tok, "a photo of a cat", "a red photo of a cat on the grass")
    # target: <s> a red photo of a cat on the grass </s>
    assert index[:2].tolist() == [0, 1] and weight[2] == 0  # 'red' is new
    assert index[3:7].tolist() == [2, 3, 4, 5] and weight[3:7].tolist() == [1, 1, 1, 1]
    assert weight[7:10].tolist() == [0, 0, 0]  # 'on the grass' are new
    assert index[10] == 6  # end token aligned to end token
    assert index[11:].tolist() == list(range(11, 77)) and bool((weight[11:] == 1).all())


def test_windows_follow_the_released_code():
    alpha = cross_window(0.3, 4, 77)
    assert alpha.shape == (5, 77)
    assert alpha[:, 0].tolist() == [1, 0, 0, 0, 0]  # int(0.3 * 5) = 1: only step 0
    assert cross_window(0.5, 4, 77)[:, 0].tolist() == [1, 1, 0, 0, 0]
    assert self_window(0.6, 4) == (0, 2)  # int(0.6 * 4) = 2
    assert self_window(0.6, 3) == (0, 1)


def test_derived_words_in_replace_mode():
    w = derive_edit_words("a photo of a pug", "a photo of a bear", "auto", 4.0)
    assert w.mode == "replace" and w.amplify == (("bear", 4.0),)
    assert (w.blend_source, w.blend_target) == (("pug",), ("bear",)) and w.derived


def test_derived_words_in_refine_mode_skip_stop_words_and_blend_nothing():
    w = derive_edit_words("a photo of a pug", "a photo of a pug in a red hat", "auto", 4.0)
    assert w.mode == "refine" and w.amplify == (("red", 4.0), ("hat", 4.0))
    assert w.blend_target == ()


def test_explicit_words_override_and_can_be_turned_off():
    w = derive_edit_words("a pug", "a bear", "auto", 4.0, amplify=[], no_blend=True)
    assert w.amplify == () and w.blend_target == ()
    w = derive_edit_words("a pug", "a bear", "replace", 4.0, amplify=[("bear", 2.5)], blend=[("pug", "bear")])
    assert w.amplify == (("bear", 2.5),) and not w.derived


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"amplify": [("cat", 2.0)]}, "not in the target prompt"),
        ({"blend": [("cat", "bear")]}, "not in the source prompt"),
        ({"blend": [("pug", "cat")]}, "not in the target prompt"),
    ],
)
def test_words_not_in_their_prompt_are_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        derive_edit_words("a pug", "a bear", "auto", 4.0, **kwargs)


def test_replace_mode_with_different_word_counts_is_an_error():
    with pytest.raises(InputError, match="same number of words"):
        derive_edit_words("a pug", "a big bear", "replace", 4.0)


def test_several_targets_take_the_words_they_contain():
    words = derive_all_edit_words("a pug", ["a bear", "a lion"], "auto", 4.0, blend=[("pug", "bear"), ("pug", "lion")])
    assert words[0].blend_target == ("bear",) and words[1].blend_target == ("lion",)
    with pytest.raises(InputError, match="none of the target prompts"):
        derive_all_edit_words("a pug", ["a bear", "a lion"], "auto", 4.0, amplify=[("cat", 2.0)])
