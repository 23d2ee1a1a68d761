"""Reading what an edit starts from: a photo, or a latent file written by `icdedit invert`.

Everything here runs before a model is loaded (a latent file also names the model that made
it); `plans.invert_source` inverts a photo with the loaded Editor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, UsageError
from .images import load_image
from .latents import LatentFile, check_same_model, is_latent_file, load_latent, size_text
from .presets import check_number
from .specs import ModelSpec, resolve_model
from .text import check_prompt
from .values import Inversion

GENERATED = "generate"  # metadata `origin` of noise written by `icdedit generate --save-noise`


def latent_metadata(
    spec: ModelSpec, inversion: Inversion, source: Path | None, generated: bool = False
) -> dict[str, str]:
    """What a latent file records beside the tensor. Generated noise also records the guidance
    its trajectory was decoded with: an edit decodes its source row with it (the generated image
    again) and takes it as the targets' default."""
    meta = {
        **spec.identity(),
        "reverse_timesteps": ",".join(map(str, spec.reverse_timesteps)),
        "prompt": inversion.prompt,
        "seed": str(inversion.seed),
        "processed_size": size_text(inversion.processed_size),
        "original_size": size_text(inversion.original_size),
    }
    if spec.path is not None:
        meta["model_path"] = str(spec.path.resolve())
    if source is not None:
        meta["source_image"] = source.name
    if generated:
        meta.update(
            origin=GENERATED, source_guidance=repr(inversion.source_guidance), source_tau=repr(inversion.source_tau)
        )  # repr: the exact floats, so that the source row is the generated image again
    return meta


def generation_settings(latent: LatentFile, path: Path) -> dict[str, float]:
    """The guidance and tau that generated noise was decoded with ({} for an inverted photo's)."""
    if latent.metadata.get("origin") != GENERATED:
        return {}
    settings = {}
    for name in ("guidance", "tau"):
        text = latent.metadata.get(f"source_{name}", "")
        try:
            settings[name] = check_number(name, float(text), f"{path} metadata source_{name}")
        except (ValueError, UsageError):
            raise InputError(
                f"{path}: metadata source_{name} = {text!r} is not a usable {name}",
                "generate the image again with --save-noise",
            ) from None
    return settings


def spec_for_latent(latent: LatentFile, model: str | None) -> ModelSpec:
    """An explicit --model wins; else the model that wrote the latent file."""
    if model:
        return resolve_model(model)
    recorded = latent.metadata.get("model_path")
    if recorded and Path(recorded).is_file():
        return resolve_model(recorded)
    return resolve_model(latent.metadata.get("model"))


def inversion_from_latent(latent: LatentFile, prompt: str | None, trajectory: dict[str, float]) -> Inversion:
    if latent.latent.shape[0] != 1:
        raise InputError(
            "the latent file holds final latents of an edit, not an inversion", "use a file written by `icdedit invert`"
        )
    return Inversion(
        latent.latent,
        prompt or latent.prompt,
        latent.seed,  # checked by load_latent
        latent.processed_size,
        latent.original_size,
        source_guidance=trajectory.get("guidance", 0.0),
        source_tau=trajectory.get("tau", 1.0),
    )


@dataclass
class Source:
    """A photo or a latent file, read and checked before any model is loaded."""

    spec: ModelSpec
    prompt: str
    image: object | None = None
    latent: LatentFile | None = None
    generated: dict[str, float] = field(default_factory=dict)  # generated noise: its guidance and tau


def read_source(path: Path, prompt: str | None, model: str | None, what: str) -> Source:
    if is_latent_file(path):
        latent = load_latent(path)
        spec = spec_for_latent(latent, model)
        check_same_model(latent, spec.identity(), path)
        prompt = check_prompt(prompt or latent.prompt, what)
        return Source(spec, prompt, latent=latent, generated=generation_settings(latent, path))
    image = load_image(path)
    if prompt is None:
        raise InputError(f"a prompt describing {path.name} is needed", f"pass --{what} 'a photo of ...'")
    return Source(resolve_model(model), check_prompt(prompt, what), image=image)
