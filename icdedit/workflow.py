"""The single-photo commands: invert, reconstruct and edit (plans.py decides and runs an edit).

Every check that needs no model (files, prompts, words, outputs) runs before the model is
loaded, so a bad invocation fails in milliseconds; every output is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .captions import caption_fields, caption_images, caption_metadata, captioner_folder, captioner_record, is_auto
from .errors import OutputError
from .files import check_output
from .images import check_size, image_format, load_image, save_image
from .latents import is_latent_file, save_latent
from .metrics import psnr, ssim
from .naming import default_output
from .plans import EditRequest, invert_source, plan_edit, run_plan, tell
from .presets import check_number, check_seed
from .records import image_record, input_record, model_record, record_text, run_record, source_record
from .reporting import Reporter
from .run_context import RunOptions, load_editor, warn_truncation
from .sources import latent_metadata, read_source
from .specs import resolve_model
from .text import check_prompt
from .values import reconstruct_values

__all__ = ["EditRequest", "InvertRequest", "ReconstructRequest", "run_edit", "run_invert", "run_reconstruct"]


# -- invert ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InvertRequest:
    image: Path
    prompt: str
    model: str | None = None
    seed: int = 0
    size: int | None = None
    output: Path | None = None
    overwrite: bool = False
    run: RunOptions = field(default_factory=RunOptions)
    captioner: Path | None = None  # --captioner PATH, for --prompt auto


def run_invert(request: InvertRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    check_prompt(request.prompt)
    check_seed(request.seed)
    check_size(request.size)
    image = load_image(request.image)
    output = request.output or default_output(Path(f"{request.image.stem}.safetensors"), request.overwrite)
    if output.suffix.lower() != ".safetensors":
        raise OutputError(f"latent output {output} must end in .safetensors", "e.g. -o photo.safetensors")
    check_output(output, request.overwrite, inputs=(request.image,))
    spec = resolve_model(request.model)
    caption = None
    if is_auto(request.prompt):  # after every check: the captioner is a model
        prompt, caption = caption_photo(image, request.image, request.captioner, request.run, reporter)
        request = dataclasses.replace(request, prompt=prompt)
    if request.run.preview:
        reporter.note("note: --preview changes nothing here: an inversion decodes no image")
    editor = load_editor(spec, request.run, reporter)
    warn_truncation(editor, [request.prompt], reporter)
    step = reporter.stage("inverting", spec.plan().num_forward_steps)
    inversion = editor.invert(image, request.prompt, request.seed, request.size, on_step=step)
    meta = {**latent_metadata(spec, inversion, request.image), **caption_metadata(caption)}
    record = image_record(
        "invert",
        model=model_record(spec, request.model),
        seed=request.seed,
        run=run_record(editor),
        prompt=request.prompt,
        source=source_record(request.image, image),
        size=list(inversion.processed_size),
        size_flag=request.size,
        **caption_fields(caption, request.prompt),
    )
    save_latent(output, inversion.latent, {**meta, "record": json.dumps(record)})
    return {
        "command": "invert",
        "output": str(output),
        "model": spec.name,
        "prompt": request.prompt,
        "seed": request.seed,
        "latent_shape": list(inversion.latent.shape),
        "processed_size": list(inversion.processed_size),
        "original_size": list(inversion.original_size),
        **caption_report(caption, request.prompt),
    }


# -- --src auto / --prompt auto: the caption, made before planning -------------------------------------
def caption_photo(image, path: Path, captioner: Path | None, run: RunOptions, reporter: Reporter):
    """The photo's caption and the captioner's record: the captioner found (or fetched on first
    use), loaded, run once and freed before the diffusion model loads."""
    run.check()
    folder = captioner_folder(captioner, reporter, run.offline)
    caption = caption_images([image], folder, run.device, reporter)[0]
    reporter.note(f"caption of {path.name}: {caption!r}")
    return caption, captioner_record(captioner)


def caption_report(caption: dict | None, prompt: str) -> dict:
    """What --json adds when the source prompt is a caption."""
    return {"caption": prompt, "source_prompt_from": "captioner"} if caption else {}


def captioned_request(request: EditRequest, reporter: Reporter) -> EditRequest:
    """An edit whose --src is `auto` on a photo, with the photo's caption as its source prompt."""
    if not is_auto(request.src) or is_latent_file(request.source):
        return request
    image = load_image(request.source)
    prompt, caption = caption_photo(image, request.source, request.captioner, request.run, reporter)
    return dataclasses.replace(request, src=prompt, caption=caption)


# -- reconstruct -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReconstructRequest:
    source: Path
    prompt: str | None = None
    model: str | None = None
    seed: int = 0
    guidance: float | None = None  # default: 0, or a generated noise file's own
    tau: float | None = None  # default: 0.8, or a generated noise file's own
    size: int | None = None
    output: Path | None = None
    overwrite: bool = False
    run: RunOptions = field(default_factory=RunOptions)
    captioner: Path | None = None  # --captioner PATH, for --prompt auto


def run_reconstruct(request: ReconstructRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    for name in ("guidance", "tau"):
        if getattr(request, name) is not None:
            check_number(name, getattr(request, name), f"--{name}")
    check_seed(request.seed)
    check_size(request.size)
    caption = None
    prompt = request.prompt
    if is_auto(prompt) and is_latent_file(request.source):
        prompt = None  # a latent file's own prompt (its caption, when it was inverted with --prompt auto)
    elif is_auto(prompt):
        photo = load_image(request.source)
        prompt, caption = caption_photo(photo, request.source, request.captioner, request.run, reporter)
    source = read_source(request.source, prompt, request.model, "prompt")
    guidance, tau = reconstruct_values(source.generated, request.guidance, request.tau)
    output = request.output or default_output(Path(f"{request.source.stem}-reconstruction.png"), request.overwrite)
    image_format(output)
    check_output(output, request.overwrite, inputs=(request.source,))
    decoder = request.run.decoder_label(source.spec)
    editor = load_editor(source.spec, request.run, reporter)
    warn_truncation(editor, [source.prompt], reporter)
    inversion = invert_source(editor, source, request.seed, request.size, reporter)
    step = reporter.stage("decoding", source.spec.plan().num_reverse_steps)
    image, _ = editor.reconstruct(inversion, guidance, tau, on_step=step)
    record = image_record(
        "reconstruct",
        model=model_record(source.spec, request.model),
        seed=inversion.seed,
        run=run_record(editor, decoder),
        prompt=source.prompt,
        guidance=guidance,
        tau=tau,
        source=input_record(request.source, source),
        size=list(image.size),
        size_flag=request.size,
        steps=source.spec.plan().num_reverse_steps,
        **caption_fields(caption, source.prompt),
    )
    save_image(image, output, record_text(record))
    result = {
        "command": "reconstruct",
        "output": str(output),
        "model": source.spec.name,
        "prompt": source.prompt,
        "seed": inversion.seed,
        "guidance": guidance,
        "tau": tau,
        "size": list(image.size),
        **({"decoder": decoder} if decoder else {}),
        **caption_report(caption, source.prompt),
    }
    if source.image is not None:
        result.update(psnr=round(psnr(source.image, image), 4), ssim=round(ssim(source.image, image), 5))
    return result


# -- edit (a grid of one cell) and edit --grid -----------------------------------------------------
def run_edit(request: EditRequest, reporter: Reporter | None = None) -> dict:
    """Plan (every check, no model), load, run: one edit, or every cell of a --grid."""
    reporter = reporter or Reporter()
    request = captioned_request(request, reporter)
    plan = plan_edit(request)
    tell(plan, reporter)
    editor = load_editor(plan.spec, request.run, reporter)
    return {**run_plan(editor, plan, reporter), **caption_report(plan.caption, plan.source.prompt)}
