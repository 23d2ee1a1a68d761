"""Edit methods (docs/numerics.md sections 6-7): how an inversion is decoded into the edit, and
which settings each way reads.

Users name a method by its string (`p2p`, `switch`, `p2p+switch`: flags, presets, manifest
rows); everything that acts on one looks the object up with `edit_method(name)` and asks it.
A setting that the method would ignore is refused when it is given explicitly (a flag, a grid
axis, a batch row's cell: `preparation.check_method_options`, `grid.check_grid_method`,
`manifests`), never silently dropped. Any family can use any method; a family's
`edit_method` (families.py) is the one used when neither a flag, a preset nor a row names one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import SettingsError

# The settings that only some methods read, in the order errors name them. `amplify` is both
# the factor (a setting) and the words with their factors (--amplify, a manifest's amplify
# column); `blend` the local-blend words (--blend, a manifest's blend column).
ATTENTION_SETTINGS = ("cross_replace", "self_replace", "mode", "blend_threshold", "blend", "amplify", "words")
SWITCH_SETTINGS = ("amplify_prompt",)
METHOD_SETTINGS = (*ATTENTION_SETTINGS, *SWITCH_SETTINGS)


@dataclass(frozen=True)
class EditMethod:
    """One way to decode an edit: whether it controls attention (Prompt-to-Prompt: source and
    targets in one batch, docs/numerics.md section 6), whether it switches prompts (the target
    rows use the amplify prompt's tokens while t > tau x 1000, section 7), and the settings of
    METHOD_SETTINGS it reads (guidance and tau are read by every method)."""

    name: str  # as users type it
    description: str
    controls_attention: bool
    switches_prompts: bool
    reads: frozenset[str]

    def __post_init__(self) -> None:
        unknown = self.reads - set(METHOD_SETTINGS)
        if unknown:
            raise ValueError(f"method {self.name!r} reads unknown settings {sorted(unknown)}")

    def ignored(self, given: Iterable[str]) -> list[str]:
        """The settings among `given` that this method would ignore, in METHOD_SETTINGS order."""
        given = set(given)
        return [name for name in METHOD_SETTINGS if name in given and name not in self.reads]

    def why_ignored(self, settings: Iterable[str]) -> str:
        """Why this method ignores `settings` (some of `ignored`), as the end of a sentence."""
        settings = set(settings)
        reasons = []
        if settings & set(ATTENTION_SETTINGS) and not self.controls_attention:
            reasons.append("uses no attention control")
        if settings & set(SWITCH_SETTINGS) and not self.switches_prompts:
            reasons.append("switches no prompts")
        return " and ".join(reasons) or "does not read them"


def _method(name: str, description: str, attention: bool, switch: bool) -> EditMethod:
    reads = (ATTENTION_SETTINGS if attention else ()) + (SWITCH_SETTINGS if switch else ())
    return EditMethod(name, description, attention, switch, frozenset(reads))


P2P = "p2p"
SWITCH = "switch"
P2P_SWITCH = "p2p+switch"
METHODS: dict[str, EditMethod] = {
    method.name: method
    for method in (
        _method(P2P, "Prompt-to-Prompt attention control (the released SD1.5 edit)", True, False),
        _method(SWITCH, "prompt switch: the amplify prompt while t > tau x 1000 (the released SDXL edit)", False, True),
        _method(P2P_SWITCH, "both: the prompt switch early, attention control throughout", True, True),
    )
}
EDIT_METHODS = {name: method.description for name, method in METHODS.items()}  # name -> what it does


def edit_method(name: str) -> EditMethod:
    """The method a settings file, flag or row names."""
    if name not in METHODS:
        raise SettingsError(f"{name!r} is not an edit method", f"use one of {', '.join(METHODS)}")
    return METHODS[name]


def readers(settings: Iterable[str]) -> list[str]:
    """The names of the methods that read every one of `settings`."""
    settings = set(settings)
    return [name for name, method in METHODS.items() if settings <= method.reads]


def method_hint(settings: Iterable[str], otherwise: str) -> str:
    """'add --method p2p (or p2p+switch), <otherwise>': the methods that read `settings`."""
    names = readers(settings)
    if not names:
        return otherwise
    others = f" (or {', '.join(names[1:])})" if names[1:] else ""
    return f"add --method {names[0]}{others}, {otherwise}"


def controls_attention(name: str) -> bool:
    """Whether the named method uses Prompt-to-Prompt (a thin lookup: prefer asking the object)."""
    return edit_method(name).controls_attention


def switches_prompts(name: str) -> bool:
    """Whether the named method switches prompts (a thin lookup: prefer asking the object)."""
    return edit_method(name).switches_prompts
