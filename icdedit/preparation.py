"""Preparing an edit, before any model loads: settings, checks, the words that steer it.

One pure step, used by the CLI (`edit`), `batch` and the library (`Editor.edit`): a model spec
and an edit request in, a `PreparedEdit` out, or an `IcdEditError` naming what is wrong.

Settings precedence, resolved in `resolve_settings` and nowhere else: explicit values (a
command-line flag; in `batch`, a row's own cell over the command line's flag) > the preset
(`--preset`, or a row's `preset`) > the model's default preset (its family's `default_preset`).
The edit method is resolved the same way, ending at the model family's own; which settings a
method reads, and so refuses when given for nothing, is the method's (methods.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from .errors import SettingsError, UsageError
from .methods import P2P, edit_method, method_hint
from .p2p.plan import EditWords, derive_all_edit_words
from .presets import AMPLIFY_PROMPT_CHOICES, EditSettings, load_preset
from .specs import ModelSpec
from .text import check_prompt


def resolve_settings(
    spec: ModelSpec, preset: str | EditSettings | None = None, *explicit: dict, labels: Sequence[str] = ()
) -> EditSettings:
    """The preset (a name, a file, or settings; None: the model's default preset) with each
    mapping of explicit values applied in turn (None values skipped), the last one winning.
    `labels` name the mappings in errors ("command line" where none is given)."""
    settings = preset if isinstance(preset, EditSettings) else load_preset(preset or spec.default_preset)
    for i, values in enumerate(explicit):
        settings = settings.with_overrides(labels[i] if i < len(labels) else "command line", **values)
    return with_method(spec, settings)


def with_method(spec: ModelSpec, settings: EditSettings) -> EditSettings:
    """The settings with a method: their own, or the model family's when unset."""
    return settings if settings.method else replace(settings, method=spec.traits.edit_method)


@dataclass(frozen=True)
class PreparedEdit:
    """An edit ready to run: checked prompts, resolved settings (with a method); for Prompt-to-
    Prompt the words it amplifies and blends per target (empty for the prompt switch alone);
    for the prompt switch the amplify prompt (None: each target's own, so no switch)."""

    source: str
    targets: tuple[str, ...]
    settings: EditSettings
    words: tuple[EditWords, ...]
    amplify_prompt: str | None = None

    @property
    def method(self) -> str:
        return self.settings.method


def prepare_edit(
    spec: ModelSpec,
    source: str,
    targets: Sequence[str],
    settings: EditSettings,
    *,
    amplify: Sequence[tuple[str, float]] | None = None,
    blend: Sequence[tuple[str, str]] | None = None,
    no_blend: bool = False,
    given: Iterable[str] = (),
) -> PreparedEdit:
    """Check an edit and derive its words (docs/numerics.md section 6). `given` names the settings
    the user set explicitly: a method refuses those it would ignore."""
    source = check_prompt(source, "src")
    targets = tuple(check_prompt(t, "tgt") for t in targets)
    if not targets:
        raise SettingsError("an edit needs at least one target prompt", "pass --tgt 'a photo of ...'")
    settings = with_method(spec, settings)
    check_method_options(spec, settings.method, given, amplify, blend)
    method = edit_method(settings.method)
    prompt = resolve_amplify_prompt(settings.amplify_prompt, source) if method.switches_prompts else None
    if not method.controls_attention:
        return PreparedEdit(source, targets, settings, (), prompt)
    s = settings
    words = derive_all_edit_words(source, list(targets), s.mode, s.amplify, amplify, blend, no_blend, s.words)
    return PreparedEdit(source, targets, settings, tuple(words), prompt)


def check_method_options(
    spec: ModelSpec, method: str, given: Iterable[str], amplify=None, blend=None, *, cells: bool = False
) -> None:
    """Settings the method would silently ignore (`EditMethod.ignored`) are an error naming the
    method and the methods that read them. `given`: the names of the settings given explicitly;
    `amplify`, `blend`: the word lists (--amplify, --blend), given when not empty. `cells`: name
    them as a batch row's cells rather than as flags."""
    chosen = edit_method(method)
    words = [name for name, value in (("blend", blend), ("amplify", amplify)) if value]
    ignored = chosen.ignored([*given, *words])
    if not ignored:
        return
    named = [f"{name} cell" if cells else f"--{name.replace('_', '-')}" for name in ignored]
    default = "its default" if spec.traits.edit_method == method else "as asked"
    raise UsageError(  # a flag the method would ignore: a usage error (exit 2), as a --grid axis is
        f"{', '.join(named)}: model {spec.name!r} ({spec.traits.label}) edits with the {method!r} method "
        f"({default}), which {chosen.why_ignored(ignored)}",
        method_hint(ignored, f"or leave {'them' if len(ignored) > 1 else 'it'} out"),
    )


def resolve_amplify_prompt(choice: str, source: str) -> str | None:
    """The prompt whose token embeddings target rows use while t > tau x 1000: `source` (the
    official README's), `target` (None: each target keeps its own, the official `None`), or a
    prompt of its own."""
    word = choice.strip().lower()
    if word == AMPLIFY_PROMPT_CHOICES[0]:
        return source
    if word == AMPLIFY_PROMPT_CHOICES[1]:
        return None
    return check_prompt(choice.strip(), "amplify-prompt")


def generated_noise_defaults(spec: ModelSpec, guidance: float, tau: float, method: str | None = None) -> dict:
    """Settings for editing generated noise, below flags and presets: Prompt-to-Prompt (the
    classic use: every row under the generation's guidance) unless a method is asked for, the
    generation's guidance, and its tau unless the method switches prompts (at the generation's
    usual tau 1 a switch would never happen, and the target would just be generated anew)."""
    method = method or (spec.traits.edit_method if edit_method(spec.traits.edit_method).controls_attention else P2P)
    values = {"method": method, "guidance": guidance}
    if not edit_method(method).switches_prompts:
        values["tau"] = tau
    return values


def explicit(values: dict) -> list[str]:
    """The names of the settings given explicitly (not None) in `values`."""
    return [name for name, value in values.items() if value is not None]
