"""Edit settings and the named presets in `presets/*.yaml`.

Which preset applies and what overrides it is resolved in `preparation.resolve_settings`:
explicit values (flag; in a batch, a row's cell over the flag) > preset file > the model's
default preset. `EditSettings()`'s own defaults are the official SD1.5 settings.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import yaml

from .errors import SettingsError, UsageError, unknown_name_hint
from .methods import EDIT_METHODS
from .paths import presets_dir

DEFAULT_PRESET = "default"
MODES = ("auto", "replace", "refine")
# The amplify prompt (the prompt switch's prompt of the high-noise steps): these two words name
# the edit's own prompts; any other text is a prompt of its own (docs/numerics.md section 7).
AMPLIFY_PROMPT_CHOICES = ("source", "target")
# How Prompt-to-Prompt's words are chosen when not given: icdedit's derivation, or the official
# launcher's rules exactly (p2p/launcher_words.py; docs/numerics.md section 10).
WORD_RULES = ("auto", "official")
ROW_SEED = "row"  # a preset's seed: each batch row's 0-based index (the official SDXL launcher's)

# name -> (low, high, what it means); bounds are inclusive
RANGES: dict[str, tuple[float, float, str]] = {
    "guidance": (0.0, 50.0, "guidance scale of the target prompt"),
    "tau": (0.0, 1.0, "dynamic guidance switches on below t/1000 = tau"),
    "cross_replace": (0.0, 1.0, "fraction of steps whose cross-attention is replaced"),
    "self_replace": (0.0, 1.0, "fraction of steps whose self-attention is injected"),
    "amplify": (0.0, 20.0, "factor for the attention of the edited words"),
    "blend_threshold": (0.0, 1.0, "local-blend mask threshold"),
}


SEED_MAX = 2**63 - 1  # seeds are torch.Generator seeds, kept within a signed 64-bit integer


def check_seed(seed: int, source: str = "--seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise UsageError(f"{source} {seed!r} is out of range", "a whole number from 0 to 2^63 - 1")
    return seed


def check_number(name: str, value, source: str = "command line") -> float:
    """A finite number within RANGES[name], or a UsageError naming where it came from."""
    low, high, meaning = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{source}: {name} = {value!r} is not a number", f"{meaning}; allowed {low:g}..{high:g}")
    if isinstance(value, int) and not low <= value <= high:  # a huge int: math.isfinite would overflow
        raise UsageError(f"{source}: {name} = {value!r} is out of range", f"{meaning}; allowed {low:g}..{high:g}")
    if not math.isfinite(value) or not low <= value <= high:
        raise UsageError(f"{source}: {name} = {value!r} is out of range", f"{meaning}; allowed {low:g}..{high:g}")
    return float(value)


@dataclass(frozen=True)
class EditSettings:
    """How an edit is decoded. Defaults: the official SD1.5 launch script (docs/numerics.md section 5)."""

    guidance: float = 19.0
    tau: float = 0.8
    cross_replace: float = 0.3
    self_replace: float = 0.6
    amplify: float = 4.0
    blend_threshold: float = 0.3
    mode: str = "auto"
    method: str | None = None  # an edit method (a key of methods.METHODS); None: the model family's
    amplify_prompt: str = "source"  # the prompt switch's: source, target, or a prompt of its own
    model: str | None = None
    words: str = "auto"  # WORD_RULES: how Prompt-to-Prompt's words are derived when not given
    seed: int | str | None = None  # a preset's seed, below --seed and a row's cell; ROW_SEED: the row index
    resize: str | None = None  # "WxH": every photo resized to exactly that first (aspect not kept)
    description: str = ""

    def validated(self, source: str = "settings") -> EditSettings:
        for name in RANGES:
            check_number(name, getattr(self, name), source)
        if self.mode not in MODES:
            raise UsageError(f"{source}: mode = {self.mode!r} is not allowed", f"use one of {', '.join(MODES)}")
        if isinstance(self.method, str) and self.method.strip().lower() != self.method:  # P2P, ' switch'
            return replace(self, method=self.method.strip().lower()).validated(source)
        if self.method is not None and self.method not in EDIT_METHODS:
            raise UsageError(
                f"{source}: method = {self.method!r} is not an edit method", f"use one of {', '.join(EDIT_METHODS)}"
            )
        if not isinstance(self.amplify_prompt, str) or not self.amplify_prompt.strip():
            raise UsageError(
                f"{source}: amplify_prompt = {self.amplify_prompt!r} is not a prompt",
                f"use {' or '.join(AMPLIFY_PROMPT_CHOICES)}, or a prompt in words",
            )
        if self.words not in WORD_RULES:
            raise UsageError(f"{source}: words = {self.words!r} is not allowed", f"use one of {', '.join(WORD_RULES)}")
        if self.seed is not None and self.seed != ROW_SEED:
            check_seed(self.seed, f"{source}: seed")
        if self.resize is not None:
            parse_resize(self.resize, source)
        return self

    def with_overrides(self, source: str = "command line", **flags) -> EditSettings:
        """Explicit values (not None) override the preset; `source` names them in errors."""
        given = {k: v for k, v in flags.items() if v is not None}
        return replace(self, **given).validated(source)

    def as_dict(self) -> dict:
        """The settings as recorded: the seed is recorded as the item's own, an unset resize left out."""
        hidden = {"description", "seed", *(["resize"] if self.resize is None else [])}
        return {k: v for k, v in asdict(self).items() if k not in hidden}


def parse_resize(text, source: str = "settings") -> tuple[int, int]:
    """'1024x1024' -> (1024, 1024): the size every photo is resized to before processing."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*", str(text))
    if not match or not all(64 <= int(n) <= 8192 for n in match.groups()):
        raise UsageError(f"{source}: resize = {text!r} is not WxH", "e.g. resize: 1024x1024 (64 to 8192 pixels a side)")
    return int(match[1]), int(match[2])


def read_preset(path: Path) -> EditSettings:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SettingsError(
            f"{path}: cannot read preset ({exc.strerror})", "check the path and its permissions"
        ) from None
    except UnicodeDecodeError:
        raise SettingsError(
            f"{path}: not a text file, so not a preset", "a preset is a YAML file, e.g. guidance: 19"
        ) from None
    if not text.strip():
        raise SettingsError(
            f"{path}: empty preset", "write the settings it changes, e.g. guidance: 19 (see `icdedit presets`)"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(
            f"{path}: cannot read preset ({str(exc).splitlines()[0]})", "check the YAML syntax"
        ) from None
    if not isinstance(data, dict) or not data:
        raise SettingsError(f"{path}: a preset must be a YAML mapping of settings", "e.g. guidance: 19")
    allowed = {f.name for f in fields(EditSettings)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SettingsError(f"{path}: unknown key {unknown[0]!r}", f"allowed keys: {', '.join(sorted(allowed))}")
    values = {k: check_number(k, v, str(path)) if k in RANGES else v for k, v in data.items()}
    for key in ("model", "method", "amplify_prompt", "words", "resize"):
        if values.get(key) is not None:
            values[key] = str(values[key]).strip()
    return EditSettings(**values).validated(str(path))


def builtin_presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(presets_dir().glob("*.yaml"))}


def load_preset(name_or_path: str | None) -> EditSettings:
    """A built-in preset name or a YAML file -> validated settings."""
    name = name_or_path or DEFAULT_PRESET
    presets = builtin_presets()
    if name in presets:
        return read_preset(presets[name])
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SettingsError(f"preset file not found: {path}", "give an existing .yaml file or a preset name")
        return read_preset(path)
    raise UsageError(f"unknown preset {name!r}", f"{unknown_name_hint(name, presets, 'presets')}; or a .yaml file")
