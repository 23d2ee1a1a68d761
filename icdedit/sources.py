"""Reading what an edit starts from: a photo, or a latent file written by `icdedit invert`.

Everything here runs before a model is loaded (a latent file also names the model that made
it), except `invert_source`, which inverts a photo with the loaded Editor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .editor import Editor, Inversion
from .errors import InputError
from .images import load_image
from .latents import LatentFile, check_same_model, is_latent_file, load_latent, size_text
from .reporting import Reporter
from .specs import ModelSpec, resolve_model
from .text import check_prompt


def latent_metadata(spec: ModelSpec, inversion: Inversion, source: Path | None) -> dict[str, str]:
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
    return meta


def spec_for_latent(latent: LatentFile, model: str | None) -> ModelSpec:
    """An explicit --model wins; else the model that wrote the latent file."""
    if model:
        return resolve_model(model)
    recorded = latent.metadata.get("model_path")
    if recorded and Path(recorded).is_file():
        return resolve_model(recorded)
    return resolve_model(latent.metadata.get("model"))


def inversion_from_latent(latent: LatentFile, prompt: str | None) -> Inversion:
    if latent.latent.shape[0] != 1:
        raise InputError(
            "the latent file holds final latents of an edit, not an inversion", "use a file written by `icdedit invert`"
        )
    return Inversion(
        latent.latent,
        prompt or latent.prompt,
        int(latent.metadata.get("seed", 0)),
        latent.processed_size,
        latent.original_size,
    )


@dataclass
class Source:
    """A photo or a latent file, read and checked before any model is loaded."""

    spec: ModelSpec
    prompt: str
    image: object | None = None
    latent: LatentFile | None = None
    notes: list[str] = field(default_factory=list)


def read_source(path: Path, prompt: str | None, model: str | None, what: str) -> Source:
    if is_latent_file(path):
        latent = load_latent(path)
        spec = spec_for_latent(latent, model)
        check_same_model(latent, spec.identity(), path)
        return Source(spec, check_prompt(prompt or latent.prompt, what), latent=latent)
    image = load_image(path)
    if prompt is None:
        raise InputError(f"a prompt describing {path.name} is needed", f"pass --{what} 'a photo of ...'")
    return Source(resolve_model(model), check_prompt(prompt, what), image=image)


def invert_source(editor: Editor, source: Source, seed: int, size: int | None, reporter: Reporter) -> Inversion:
    """The inversion of a photo, or the one a latent file holds (no model evaluation then)."""
    if source.latent is not None:
        return inversion_from_latent(source.latent, source.prompt)
    step = reporter.stage("inverting", source.spec.plan().num_forward_steps)
    return editor.invert(source.image, source.prompt, seed, size, on_step=step)
