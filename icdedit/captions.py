"""The source prompt without writing it: `--src auto` (a captioning model) and `--swap OLD=NEW`.

The captioner is BLIP large (`BlipForConditionalGeneration`, Salesforce/blip-image-captioning-
large, BSD-3-Clause): supported by transformers natively (no remote code), about 1.9 GB, and
trained on COCO-style captions, which read like the benchmark prompts ("a cat sitting on a
wooden chair"). It lives in the weights folder (`$ICDEDIT_HOME/captioner/blip-large/`, the hub
layout; `icdedit download blip-large`), or is given as a folder (`--captioner PATH`).

Captions are made with one fixed, recorded set of decoding settings (`CAPTION_SETTINGS`: beam
search without sampling, so a photo always gets the same caption) from the text prefix "a photo
of", so that the caption is a prompt in the usual form. The caption is stripped, lower-cased and
its spaces collapsed (BLIP's tokenizer is uncased already; the prompt's words are then what the
blend matcher sees: `text.words_of`).

Nothing here is called while planning (`plans.plan_edit` stays model-free): the command's work
layer (workflow.py, batch.py) captions before planning, loads the captioner once per run and
frees it before the diffusion model loads. `--swap` is pure text (`swapped_prompt`), applied by
`plan_edit` to the source prompt, whatever it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, ModelError, UsageError
from .paths import weights_home

AUTO = "auto"  # `--src auto`, `--prompt auto`, a manifest's `auto` source cell

# The decoding settings every caption is made with: recorded in each output's record.
CAPTION_SETTINGS = {"prefix": "a photo of", "num_beams": 3, "max_new_tokens": 30, "do_sample": False}


def is_auto(prompt: str | None) -> bool:
    """Whether a source prompt asks for a caption (`auto`, any case)."""
    return isinstance(prompt, str) and prompt.strip().lower() == AUTO


# -- the registry entry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionerModel:
    name: str
    description: str
    approx_bytes: int
    hub_id: str

    @property
    def folder(self) -> Path:
        return weights_home() / "captioner" / self.name

    @property
    def present(self) -> bool:
        return folder_present(self.folder)

    def ensure(self, reporter=None, offline_flag: bool = False) -> Path:
        """Its folder, fetched first when missing (as the evaluation models are); offline: one
        line naming the download."""
        from .weights import human_size, offline_reason

        if self.present:
            return self.folder
        why = offline_reason(offline_flag)
        if why:
            raise ModelError(
                f"captioner {self.name!r} (for --src auto) is not in {self.folder}",
                f"{why}: run `icdedit download {self.name}` on a machine with network, or write the source prompt "
                "with --src",
            )
        if reporter is not None:
            reporter.note(
                f"fetching captioner {self.name!r} (about {human_size(self.approx_bytes)}) from the Hugging Face hub "
                f"({self.hub_id})"
            )
        return download_captioner(self)


CAPTIONERS = {
    model.name: model
    for model in (
        CaptionerModel(
            "blip-large",
            "BLIP large captioner (--src auto: the photo's caption as the source prompt)",
            1_880_000_000,
            hub_id="Salesforce/blip-image-captioning-large",
        ),
    )
}
DEFAULT_CAPTIONER = "blip-large"


def folder_present(folder: Path) -> bool:
    weights = [*folder.glob("*.safetensors"), folder / "pytorch_model.bin"]
    return (folder / "config.json").is_file() and any(w.is_file() for w in weights)


def download_captioner(model: CaptionerModel) -> Path:
    from .download import DownloadError, offline
    from .eval_models import fetch_hub_folder

    if model.present:
        return model.folder
    if offline():
        raise DownloadError(
            f"HF_HUB_OFFLINE is set: cannot fetch captioner {model.name!r}",
            f"run `icdedit download {model.name}` on a machine with network and copy {model.folder} here",
        )
    return fetch_hub_folder(model.hub_id, model.folder, f"captioner {model.hub_id!r}")


def captioner_folder(path: Path | None, reporter=None, offline_flag: bool = False) -> Path:
    """The captioner to use: `--captioner PATH` (a folder in the hub layout, checked), else the
    registered one (fetched on first use unless offline)."""
    if path is None:
        return CAPTIONERS[DEFAULT_CAPTIONER].ensure(reporter, offline_flag)
    if not folder_present(path):
        raise ModelError(
            f"--captioner {path}: no captioner there (a folder with config.json and the weights, the hub layout)",
            f"run `icdedit download {DEFAULT_CAPTIONER}` and leave out --captioner, or give a folder saved with "
            "save_pretrained",
        )
    return path


def captioner_record(path: Path | None) -> dict:
    """What an output's record says of the captioner: which one, and the decoding settings."""
    name = str(path) if path is not None else DEFAULT_CAPTIONER
    return {"captioner": name, **CAPTION_SETTINGS}


# -- captioning ---------------------------------------------------------------------------------------
def clean_caption(text: str) -> str:
    """Stripped, lower-cased, single spaces: words as `text.words_of` splits them."""
    return " ".join(text.lower().split())


class Captioner:
    """A loaded captioner (BLIP): `caption(image)` with CAPTION_SETTINGS. Load once per run;
    `close()` frees it before the diffusion model needs the memory."""

    def __init__(self, folder: Path, device: str = "cpu"):
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        from .loader import resolve_device

        self.device = resolve_device(device)
        try:
            self.processor = BlipProcessor.from_pretrained(folder)
            self.model = BlipForConditionalGeneration.from_pretrained(folder, torch_dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"the captioner in {folder} could not be read ({str(exc).splitlines()[0][:200]})",
                f"run `icdedit download {DEFAULT_CAPTIONER}` again, or give a BLIP folder saved with save_pretrained",
            ) from None
        self.model.to(self.device).eval()

    def caption(self, image) -> str:
        import torch

        settings = dict(CAPTION_SETTINGS)
        prefix = settings.pop("prefix")
        inputs = self.processor(images=image.convert("RGB"), text=prefix, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            ids = self.model.generate(**inputs, **settings)
        return clean_caption(self.processor.decode(ids[0], skip_special_tokens=True))

    def close(self) -> None:
        from .run_context import free_device_memory

        del self.model, self.processor
        free_device_memory()


def caption_images(images, folder: Path, device: str = "cpu", reporter=None) -> list[str]:
    """Each image's caption, the captioner loaded once and freed after."""
    if reporter is not None:
        done = reporter.stage("captioning", len(images))
    captioner = Captioner(folder, device)
    try:
        captions = []
        for image in images:
            captions.append(captioner.caption(image))
            if reporter is not None:
                done()
        return captions
    finally:
        captioner.close()


# -- --swap OLD=NEW -----------------------------------------------------------------------------------
def parse_swap(text: str, what: str = "--swap") -> tuple[str, str]:
    """'OLD=NEW' -> (OLD, NEW): one word each side (a word as the blend matcher sees it)."""
    old, sep, new = str(text).partition("=")
    old, new = old.strip(), new.strip()
    if not sep or not old or not new or " " in old or " " in new:
        raise UsageError(f"{what} {text!r} is not OLD=NEW", f"e.g. {what} cat=tiger (one word each side)")
    return old, new


def swapped_prompt(prompt: str, swaps, fix: str = "--src") -> str:
    """`prompt` with each OLD word replaced by NEW, whole words as `text.words_of` splits them
    (the blend matcher's words). OLD missing: one line that shows the prompt."""
    from .text import words_of

    words = words_of(prompt)
    for old, new in swaps:
        if old not in words:
            raise InputError(
                f"--swap {old}={new}: {old!r} is not a word of the source prompt {prompt!r}",
                f"swap one of its words, or write the source prompt with {fix} 'a photo of ...'",
            )
        words = [new if w == old else w for w in words]
    return " ".join(words)


# -- where the caption is kept ------------------------------------------------------------------------
def caption_fields(caption: dict | None, prompt: str) -> dict:
    """What an output's record adds when its source prompt is a caption: where the prompt came
    from, the caption, and the captioner with its decoding settings."""
    if not caption:
        return {}
    return {"source_prompt_from": "captioner", "caption": prompt, "captioner": caption}


def caption_metadata(caption: dict | None) -> dict[str, str]:
    """The same in a latent file's header (strings only): the file's `prompt` is the caption."""
    import json

    if not caption:
        return {}
    return {"source_prompt_from": "captioner", "captioner": json.dumps(caption, sort_keys=True)}


def caption_from_metadata(metadata: dict[str, str]) -> dict | None:
    """The captioner record of a latent file whose prompt is a caption, else None."""
    import json

    if metadata.get("source_prompt_from") != "captioner":
        return None
    try:
        record = json.loads(metadata.get("captioner", "{}"))
    except ValueError:
        record = {}
    return record if isinstance(record, dict) else {}
