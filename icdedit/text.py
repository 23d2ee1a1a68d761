"""Prompts: CLIP tokenization, embeddings, and the words of a prompt (docs/numerics.md sections 2 and 6)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import InputError


def words_of(prompt: str) -> list[str]:
    """A word is a space-separated piece of the prompt, matched by exact string equality."""
    return prompt.split(" ")


def check_prompt(prompt: str, what: str = "prompt", example: str | None = None) -> str:
    """`prompt`, refused when empty; the hint shows `example` (default: the --WHAT flag with a prompt)."""
    if not prompt or not prompt.strip():
        example = example or f"--{what} 'a photo of a cat'"
        raise InputError(f"the {what} is empty", f"give a short description such as {example}")
    return prompt


def token_ids(tokenizer, prompt: str) -> list[int]:
    """All token ids of `prompt` including the start and end tokens, before truncation."""
    return list(tokenizer(prompt, truncation=False).input_ids)


def truncation_warning(tokenizer, prompt: str) -> str | None:
    """A message when the prompt is longer than the text encoder takes, else None."""
    n = len(token_ids(tokenizer, prompt))
    limit = tokenizer.model_max_length
    if n <= limit:
        return None
    kept = tokenizer.decode(tokenizer(prompt, truncation=True, max_length=limit).input_ids[1:-1])
    return f"prompt has {n} tokens, more than {limit}: it was truncated to {kept!r}"


@dataclass(frozen=True)
class PromptEmbeddings:
    """What prompts condition the UNet with, one row per prompt: the per-token states, and for
    SDXL the pooled embedding of the second text encoder."""

    tokens: torch.Tensor  # (B, 77, D)
    pooled: torch.Tensor | None = None  # (B, P), SDXL only

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def rows(self) -> list[PromptEmbeddings]:
        return [
            PromptEmbeddings(self.tokens[i : i + 1], None if self.pooled is None else self.pooled[i : i + 1])
            for i in range(len(self))
        ]

    @staticmethod
    def cat(parts: Sequence[PromptEmbeddings]) -> PromptEmbeddings:
        pooled = [p.pooled for p in parts]
        return PromptEmbeddings(
            torch.cat([p.tokens for p in parts]),
            None if pooled[0] is None else torch.cat(pooled),  # type: ignore[arg-type]
        )


def _token_ids_batch(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Padded to the tokenizer's max length, truncated; no attention mask is ever passed."""
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str], device: torch.device) -> torch.Tensor:
    """(B, 77, D) last hidden states: padded to max length, truncated, no attention mask, no clip-skip."""
    return text_encoder(_token_ids_batch(tokenizer, prompts).to(device))[0]


@torch.no_grad()
def encode_prompts_xl(tokenizers, text_encoders, prompts: list[str], device: torch.device) -> PromptEmbeddings:
    """SDXL, as the official code and diffusers encode: each encoder's penultimate hidden states,
    concatenated along the features (768 + 1280 = 2048 for SDXL), and the second encoder's
    projected pooled output (1280)."""
    states, pooled = [], None
    for tokenizer, text_encoder in zip(tokenizers, text_encoders):
        out = text_encoder(_token_ids_batch(tokenizer, prompts).to(device), output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled = out[0]  # the projection encoder's text_embeds (it comes last)
    return PromptEmbeddings(torch.cat(states, dim=-1), pooled)


def word_token_spans(tokenizer, prompt: str) -> list[list[int]]:
    """For each word of `prompt` (by index), its token positions (0 = start token).

    Walks the decoded sub-tokens and their character counts as the official code does, so a
    word split into several tokens maps to all of them; positions cut by the 77-token
    truncation are left out.
    """
    words = words_of(prompt)
    spans: list[list[int]] = [[] for _ in words]
    pieces = [tokenizer.decode([i]).strip("#").strip() for i in token_ids(tokenizer, prompt)[1:-1]]
    consumed, word_index = 0, 0
    limit = tokenizer.model_max_length - 1  # the last kept position holds the end token
    for i, piece in enumerate(pieces):
        if word_index >= len(words):
            break
        consumed += len(piece)
        if i + 1 < limit:
            spans[word_index].append(i + 1)
        if consumed >= len(words[word_index]):
            word_index += 1
            consumed = 0
    return spans


def word_token_positions(tokenizer, prompt: str, word: str) -> list[int]:
    """Token positions of every occurrence of `word` in `prompt`; a missing word is an InputError."""
    words = words_of(prompt)
    if word not in words:
        raise InputError(
            f"word {word!r} is not in the prompt {prompt!r}",
            "words are matched exactly after splitting on spaces; the prompt's words are: "
            + ", ".join(map(repr, words)),
        )
    spans = word_token_spans(tokenizer, prompt)
    return sorted(p for w, span in zip(words, spans) if w == word for p in span)


class PromptCache:
    """Prompt embeddings by prompt: each prompt encoded once (`encode(prompts)`, the missing
    ones together), the `size` most recently used kept."""

    def __init__(self, encode: Callable[[list[str]], PromptEmbeddings], size: int = 64):
        self.encode, self.size = encode, size
        self.rows: OrderedDict[str, PromptEmbeddings] = OrderedDict()

    def __call__(self, prompts: Sequence[str]) -> PromptEmbeddings:
        missing = [p for p in dict.fromkeys(prompts) if p not in self.rows]
        if missing:
            self.rows.update(zip(missing, self.encode(missing).rows()))
        for prompt in prompts:
            self.rows.move_to_end(prompt)
        while len(self.rows) > self.size:
            self.rows.popitem(last=False)
        return PromptEmbeddings.cat([self.rows[p] for p in prompts])

    def clear(self) -> None:
        self.rows.clear()
