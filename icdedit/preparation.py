"""Preparing an edit, before any model loads: settings, checks, the words that steer it.

One pure step, used by the CLI (`edit`), `batch` and the library (`Editor.edit`): a model spec
and an edit request in, a `PreparedEdit` out, or an `IcdEditError` naming what is wrong.

Settings precedence, resolved in `resolve_settings` and nowhere else: explicit values (a
command-line flag; in `batch`, a row's own cell over the command line's flag) > the preset
(`--preset`, or a row's `preset`) > the model's default preset (its family's: `default` for
SD1.5, `xl-default` for SDXL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import SettingsError
from .p2p.plan import EditWords, derive_all_edit_words
from .presets import EditSettings, load_preset
from .specs import ModelSpec
from .text import check_prompt

# Settings that only Prompt-to-Prompt reads; a family that edits without attention control refuses them.
ATTENTION_SETTINGS = ("cross_replace", "self_replace", "mode")


def resolve_settings(
    spec: ModelSpec, preset: str | EditSettings | None = None, *explicit: dict, labels: Sequence[str] = ()
) -> EditSettings:
    """The preset (a name, a file, or settings; None: the model's default preset) with each
    mapping of explicit values applied in turn (None values skipped), the last one winning.
    `labels` name the mappings in errors ("command line" where none is given)."""
    settings = preset if isinstance(preset, EditSettings) else load_preset(preset or spec.default_preset)
    for i, values in enumerate(explicit):
        settings = settings.with_overrides(labels[i] if i < len(labels) else "command line", **values)
    return settings


@dataclass(frozen=True)
class PreparedEdit:
    """An edit ready to run: checked prompts, resolved settings and, for Prompt-to-Prompt, the
    words it amplifies and blends per target (empty for families without attention control)."""

    source: str
    targets: tuple[str, ...]
    settings: EditSettings
    words: tuple[EditWords, ...]


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
    the user set explicitly: a family without attention control refuses those it would ignore."""
    source = check_prompt(source, "src")
    targets = tuple(check_prompt(t, "tgt") for t in targets)
    if not targets:
        raise SettingsError("an edit needs at least one target prompt", "pass --tgt 'a photo of ...'")
    if not spec.traits.attention_control:
        refused = [f"--{name.replace('_', '-')}" for name in ATTENTION_SETTINGS if name in set(given)]
        refused += [flag for flag, value in (("--blend", blend), ("--amplify", amplify)) if value]
        if refused:
            raise SettingsError(
                f"{', '.join(refused)}: model {spec.name!r} is {spec.traits.label}, whose editing switches prompts "
                "and uses no attention control",
                "leave them out; --guidance and --tau apply",
            )
        return PreparedEdit(source, targets, settings, ())
    s = settings
    words = derive_all_edit_words(source, list(targets), s.mode, s.amplify, amplify, blend, no_blend)
    return PreparedEdit(source, targets, settings, tuple(words))


def explicit(values: dict) -> list[str]:
    """The names of the settings given explicitly (not None) in `values`."""
    return [name for name, value in values.items() if value is not None]
