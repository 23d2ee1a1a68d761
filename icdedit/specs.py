"""Model descriptions: a registry of small frozen dataclasses read from `presets/models/*.yaml`.

A model is four parts (docs/numerics.md section 1): the base pipeline folder or hub id, the
guidance-distilled teacher UNet, and the forward and reverse LoRAs. In a model YAML, relative
paths resolve against the YAML's folder and `$ICDEDIT_HOME` expands to the weights folder,
so the built-in entries look for their weights there.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ModelError, UsageError, unknown_name_hint
from .families import DEFAULT_FAMILY, FAMILIES, TINY_MODELS, Family
from .paths import presets_dir, weights_home
from .schedule import StepPlan, plan_steps

DEFAULT_MODEL = "sd15-4step-v1"

_REQUIRED = ("base", "teacher", "forward_lora", "reverse_lora", "forward_timesteps", "reverse_timesteps")
_OPTIONAL = {
    "name",
    "description",
    "family",
    "guidance_embed_dim",
    "lora_alpha",
    "start_timestep",
    "resolution",
    "sources",
    "random_weights",
    "default_preset",
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    base: str  # a hub id, or an absolute folder path
    teacher: Path
    forward_lora: Path
    reverse_lora: Path
    forward_timesteps: tuple[int, ...]
    reverse_timesteps: tuple[int, ...]
    start_timestep: int = 19
    guidance_embed_dim: int = 512
    lora_alpha: float = 8.0
    resolution: int = 512
    family: str = DEFAULT_FAMILY  # a key of families.FAMILIES: see `traits`
    description: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    random_weights: bool = False
    default_preset: str = "default"  # the edit settings used when no --preset is given
    path: Path | None = None

    def plan(self) -> StepPlan:
        return plan_steps(self.forward_timesteps, self.reverse_timesteps, self.start_timestep)

    @property
    def traits(self) -> Family:
        """What the model's family does differently (text encoders, edit method, VAE, files)."""
        return FAMILIES[self.family]

    @property
    def base_is_local(self) -> bool:
        return Path(self.base).is_absolute()

    def identity(self) -> dict[str, str]:
        """What a latent file records to refuse being decoded by a different model."""
        return {
            "model": self.name,
            "base": self.base if not self.base_is_local else Path(self.base).name,
            "forward_lora": self.forward_lora.name,
            "start_timestep": str(self.start_timestep),
            "forward_timesteps": ",".join(map(str, self.forward_timesteps)),
        }


def _expand(value: str, folder: Path) -> Path:
    value = re.sub(r"\$\{ICDEDIT_HOME\}|\$ICDEDIT_HOME", lambda _: str(weights_home()), value)
    path = Path(value).expanduser()
    return path if path.is_absolute() else (folder / path)


def _looks_like_path(base: str, folder: Path) -> bool:
    """Hub ids are 'owner/name'; anything else, or a folder that exists, is a path."""
    return base.startswith((".", "/", "~", "$")) or base.count("/") != 1 or (folder / base).exists()


def _timesteps(raw, key: str, path: Path) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(t, int) and 0 <= t <= 999 for t in raw):
        raise ModelError(f"{path}: {key} must be a list of integers in 0..999, got {raw!r}")
    return tuple(raw)


def _family(data: dict, path: Path) -> Family:
    name = str(data.get("family", DEFAULT_FAMILY))
    if name not in FAMILIES:
        raise ModelError(f"{path}: family {name!r} is not supported", f"use one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def load_spec(path: Path) -> ModelSpec:
    """Read and validate one model YAML."""
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not a text file, so not a model description", "a model is a YAML file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: cannot read model description ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: a model description must be a YAML mapping")
    unknown = sorted(set(data) - set(_REQUIRED) - _OPTIONAL)
    if unknown:
        raise ModelError(
            f"{path}: unknown key(s) {', '.join(unknown)}", f"allowed: {', '.join(sorted([*_REQUIRED, *_OPTIONAL]))}"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ModelError(f"{path}: missing key(s) {', '.join(missing)}")
    folder = path.parent
    base = str(data["base"])
    try:
        spec = ModelSpec(
            name=str(data.get("name") or path.stem),
            base=str(_expand(base, folder).resolve()) if _looks_like_path(base, folder) else base,
            teacher=_expand(str(data["teacher"]), folder),
            forward_lora=_expand(str(data["forward_lora"]), folder),
            reverse_lora=_expand(str(data["reverse_lora"]), folder),
            forward_timesteps=_timesteps(data["forward_timesteps"], "forward_timesteps", path),
            reverse_timesteps=_timesteps(data["reverse_timesteps"], "reverse_timesteps", path),
            start_timestep=int(data.get("start_timestep", data["forward_timesteps"][0])),
            guidance_embed_dim=int(data.get("guidance_embed_dim", 512)),
            lora_alpha=float(data.get("lora_alpha", 8)),
            resolution=int(data.get("resolution", _family(data, path).resolution)),
            family=str(data.get("family", DEFAULT_FAMILY)),
            description=str(data.get("description", "")),
            sources={str(k): str(v) for k, v in (data.get("sources") or {}).items()},
            random_weights=bool(data.get("random_weights", False)),
            default_preset=str(data.get("default_preset") or _family(data, path).default_preset),
            path=path,
        )
        spec.plan()
    except (TypeError, ValueError, OverflowError, AttributeError) as exc:  # a value of the wrong kind
        raise ModelError(f"{path}: {exc}") from None
    if spec.resolution % 64 or not 64 <= spec.resolution <= 4096:
        raise ModelError(f"{path}: resolution must be a multiple of 64 from 64 to 4096, got {spec.resolution}")
    if not (math.isfinite(spec.lora_alpha) and spec.lora_alpha > 0):
        raise ModelError(f"{path}: lora_alpha must be a positive number, got {spec.lora_alpha}")
    if not 0 <= spec.start_timestep <= 999 or spec.guidance_embed_dim <= 0:
        raise ModelError(
            f"{path}: start_timestep must be in 0..999 and guidance_embed_dim positive",
            f"got {spec.start_timestep} and {spec.guidance_embed_dim}",
        )
    return spec


def builtin_specs() -> dict[str, ModelSpec]:
    specs = {}
    for path in sorted((presets_dir() / "models").glob("*.yaml")):
        spec = load_spec(path)
        specs[spec.name] = spec
    return specs


def known_model_names() -> list[str]:
    return [*builtin_specs(), *TINY_MODELS]


def resolve_model(model: str | Path | None) -> ModelSpec:
    """A built-in name, `tiny`, or the path of a model YAML -> its spec."""
    model = str(model or DEFAULT_MODEL)
    if model in TINY_MODELS:
        from .tiny import ensure_tiny_model

        return load_spec(ensure_tiny_model(TINY_MODELS[model]))
    builtins = builtin_specs()
    if model in builtins:
        return builtins[model]
    path = Path(model).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ModelError(f"model description not found: {path}", "give an existing .yaml file or a model name")
        return load_spec(path)
    raise UsageError(  # a name the tool does not know: a usage error, as a bad flag value
        f"unknown model {model!r}", f"{unknown_name_hint(model, known_model_names(), 'models')}; or a model .yaml file"
    )
