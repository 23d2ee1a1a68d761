"""Edit settings and the named presets in `presets/*.yaml`.

Precedence, resolved here and nowhere else: command-line flag > preset file > built-in
default (the official SD1.5 settings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import yaml

from .errors import SettingsError
from .paths import presets_dir

DEFAULT_PRESET = "default"
MODES = ("auto", "replace", "refine")

# name -> (low, high, what it means); bounds are inclusive
RANGES: dict[str, tuple[float, float, str]] = {
    "guidance": (0.0, 50.0, "guidance scale of the target prompt"),
    "tau": (0.0, 1.0, "dynamic guidance switches on below t/1000 = tau"),
    "cross_replace": (0.0, 1.0, "fraction of steps whose cross-attention is replaced"),
    "self_replace": (0.0, 1.0, "fraction of steps whose self-attention is injected"),
    "amplify": (0.0, 20.0, "factor for the attention of the edited words"),
    "blend_threshold": (0.0, 1.0, "local-blend mask threshold"),
}


@dataclass(frozen=True)
class EditSettings:
    """How an edit is decoded. Defaults: the official SD1.5 launch script (ICD_SPEC section 5)."""

    guidance: float = 19.0
    tau: float = 0.8
    cross_replace: float = 0.3
    self_replace: float = 0.6
    amplify: float = 4.0
    blend_threshold: float = 0.3
    mode: str = "auto"
    model: str | None = None
    description: str = ""

    def validated(self, source: str = "settings") -> EditSettings:
        for name, (low, high, meaning) in RANGES.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
                raise SettingsError(f"{source}: {name} = {value!r} is out of range", f"{meaning}; allowed {low:g}..{high:g}")
        if self.mode not in MODES:
            raise SettingsError(f"{source}: mode = {self.mode!r} is not allowed", f"use one of {', '.join(MODES)}")
        return self

    def with_overrides(self, **flags) -> EditSettings:
        """Explicit flags (not None) override the preset."""
        given = {k: v for k, v in flags.items() if v is not None}
        return replace(self, **given).validated("command line")

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "description"}


def read_preset(path: Path) -> EditSettings:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"{path}: cannot read preset ({str(exc).splitlines()[0]})", "check the YAML syntax") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: a preset must be a YAML mapping of settings")
    allowed = {f.name for f in fields(EditSettings)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SettingsError(f"{path}: unknown key {unknown[0]!r}", f"allowed keys: {', '.join(sorted(allowed))}")
    for key in RANGES:
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], (int, float))):
            raise SettingsError(f"{path}: {key} = {data[key]!r} is not a number",
                                f"{RANGES[key][2]}; allowed {RANGES[key][0]:g}..{RANGES[key][1]:g}")  # fmt: skip
    values = {k: float(v) if k in RANGES else v for k, v in data.items()}
    if values.get("model") is not None:
        values["model"] = str(values["model"])
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
    raise SettingsError(f"unknown preset {name!r}", f"known presets: {', '.join(presets)}; or a path to a .yaml file")
