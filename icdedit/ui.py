"""`icdedit ui`: a local web page for live editing (Gradio: `pip install 'icdedit[ui]'`).

The page's work is `UiSession`: plain functions over one loaded Editor, tested without a
browser. A photo's inversion is cached (keyed by its pixels, the source prompt, the seed and
the model), so a new target or slider value costs only the reverse steps. An edit is made
exactly as `icdedit edit` makes it: the photo and mask are written to the session's folder as
PNG and read back the way the CLI reads files, the settings are resolved and the edit
prepared by the same functions, and `command()` is the CLI command that gives the same image.
"""

from __future__ import annotations

import hashlib
import html
import re
import shlex
import shutil
import sys
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .editor import Editor
from .errors import IcdEditError, InputError, first_line
from .images import load_image, save_image
from .latents import save_latent
from .methods import edit_method
from .paths import PACKAGE_DIR
from .plans import EditRequest, plan_edit, run_plan
from .preparation import resolve_settings
from .presets import builtin_presets, check_seed
from .run_context import RunOptions
from .sources import Source, latent_metadata
from .ui_server import StopRequest, announce, launch, wait_until_stopped
from .values import Inversion


@dataclass(frozen=True)
class PageEdit:
    """What the page shows: the photo, prompts, preset, slider values, seed and drawn mask."""

    photo: Image.Image
    src: str
    targets: tuple[str, ...]
    preset: str | None = None
    guidance: float | None = None
    tau: float | None = None
    cross_replace: float | None = None
    self_replace: float | None = None
    amplify: float | None = None
    seed: int = 0
    mask: Image.Image | None = None  # white where the edit may change


@dataclass
class PageResult:
    images: list[Image.Image]  # one per target
    original: Image.Image
    command: str  # the `icdedit edit` command that gives the same images
    image_file: Path  # the first edit, for the download button
    latent_file: Path  # the photo's inversion (`icdedit invert -o` format), reusable
    inverted: bool  # False when the cached inversion was reused


def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes() + repr((image.size, image.mode)).encode()).hexdigest()[:16]


class UiSession:
    """One loaded model, a cache of inversions, and a folder for the page's files."""

    def __init__(
        self,
        editor: Editor,
        folder: Path | None = None,
        cache_size: int = 8,
        model: str | None = None,
        run: RunOptions | None = None,
        captioner: Path | None = None,
    ):
        self.editor = editor
        self.captioner = captioner  # --captioner PATH; None: the registered blip-large (the describe button)
        self._captions: dict[str, str] = {}  # photo digest -> caption
        self.model = model  # as given to --model, for the command line it shows
        self.run = run or RunOptions(preview=editor.preview_decoder is not None)  # as the server runs
        self._lock = threading.Lock()  # one edit at a time on the one model, whatever the page queues
        self._owns_folder = folder is None  # a folder of its own is removed by close()
        self.folder = Path(folder or tempfile.mkdtemp(prefix="icdedit-ui-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[tuple, Inversion] = OrderedDict()
        self._cache_size = cache_size

    @property
    def spec(self):
        return self.editor.spec

    def close(self) -> None:
        """Remove the folder the session made (uploaded photos, edits, inversions); a folder given
        to it is left to its giver (`serving_folder` removes its own at exit)."""
        if self._owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _photo_file(self, photo: Image.Image) -> Path:
        """The photo as a PNG in the session folder, named by its pixels (what the CLI reads)."""
        photo = photo.convert("RGB") if photo.mode != "RGB" else photo
        path = self.folder / f"photo-{_digest(photo)}.png"
        if not path.is_file():
            save_image(photo, path)
        return path

    def inversion(self, photo_file: Path, src: str, seed: int) -> tuple[Inversion, bool]:
        """(inversion, made now): from the cache when the photo, prompt, seed and model match."""
        key = (photo_file.name, src, seed, self.spec.name)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key], False
        inversion = self.editor.invert(load_image(photo_file), src, seed)
        self._cache[key] = inversion
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return inversion, True

    def describe(self, photo: Image.Image, reporter=None) -> str:
        """The photo's caption (the "describe the photo" button): the captioner loaded, run and
        freed at each new photo, so that it never holds memory beside the diffusion model."""
        from .captions import caption_images, captioner_folder

        photo = photo.convert("RGB") if photo.mode != "RGB" else photo
        key = _digest(photo)
        with self._lock:
            if key not in self._captions:
                folder = captioner_folder(self.captioner, reporter, self.run.offline)
                self._captions[key] = caption_images([photo], folder, str(self.editor.device))[0]
            return self._captions[key]

    def edit(self, page: PageEdit) -> PageResult:
        with self._lock:
            return self._edit(page)

    def _edit(self, page: PageEdit) -> PageResult:
        """The page's edit as a plan of `icdedit edit` (plans.py), run on the cached inversion."""
        check_seed(page.seed, "seed")
        targets = [t.strip() for t in page.targets if t.strip()]
        if not targets:
            raise InputError("give a target prompt", "what should the photo show instead?")
        photo_file, mask_file = self._photo_file(page.photo), self._mask_file(page.mask)
        request = self._request(page, targets, photo_file, mask_file)
        plan = plan_edit(request, Source(self.spec, page.src, image=load_image(photo_file)))
        inversion, inverted = self.inversion(photo_file, plan.source.prompt, page.seed)
        run_plan(self.editor, plan, inversion=inversion)
        image_file = plan.outputs[0][0]
        images = [load_image(path) for path in plan.outputs[0]]
        prompt_digest = hashlib.sha256(plan.source.prompt.encode()).hexdigest()[:8]
        latent_file = self.folder / f"{photo_file.stem}-{prompt_digest}-seed{page.seed}.safetensors"
        if inverted or not latent_file.is_file():
            save_latent(latent_file, inversion.latent, latent_metadata(self.spec, inversion, photo_file))
        command = self.command(request, plan.given)
        return PageResult(images, load_image(photo_file), command, image_file, latent_file, inverted)

    def _request(self, page: PageEdit, targets: list[str], photo_file: Path, mask_file: Path | None) -> EditRequest:
        """The page as an `edit` request: its sliders are applied where the edit method reads them."""
        values = {"guidance": page.guidance, "tau": page.tau, "cross_replace": page.cross_replace}
        values.update(self_replace=page.self_replace, amplify=page.amplify)
        made = (photo_file.name, page.src, targets, page.preset, values, page.seed, mask_file and mask_file.name)
        name = hashlib.sha256(repr(made).encode()).hexdigest()[:16]
        return EditRequest(
            photo_file,
            targets,
            page.src,
            preset=page.preset,
            seed=page.seed,
            sliders=values,
            output=self.folder / f"edit-{name}.png",
            overwrite=True,  # the page's own folder: the same name is the same edit
            mask=mask_file,
            run=self.run,
        )

    def _mask_file(self, mask: Image.Image | None) -> Path | None:
        if mask is None:
            return None
        grey = mask.convert("L")
        if grey.getextrema()[1] == 0:
            return None  # nothing drawn: no mask
        path = self.folder / f"mask-{_digest(grey)}.png"
        if not path.is_file():
            save_image(grey, path)
        return path

    def command(self, request: EditRequest, given: dict) -> str:
        """The CLI command for this edit (the same files, settings and seed)."""
        parts = ["icdedit", "edit", str(request.source), "-s", request.src]
        for target in request.targets:
            parts += ["-t", target]
        if self.model:
            parts += ["-m", self.model]
        if request.preset:
            parts += ["--preset", request.preset]
        for name, value in given.items():  # amplify: the derived words' factor, as `--amplify 3` means
            parts += [f"--{name.replace('_', '-')}", f"{value:g}"]
        if request.mask is not None:
            parts += ["--mask", str(request.mask)]
        parts += ["--seed", str(request.seed)]
        for flag, value in self.run.flags().items():
            parts += [f"--{flag}"] if value is True else [f"--{flag}", str(value)]
        return shlex.join(parts)


def mask_from_editor(value) -> tuple[Image.Image | None, Image.Image | None]:
    """Gradio's ImageMask value -> (photo, mask): the background, and where strokes were drawn."""
    if value is None:
        return None, None
    if isinstance(value, Image.Image):
        return value, None
    photo = value.get("background") or value.get("composite")
    strokes = [layer for layer in value.get("layers") or [] if layer is not None]
    if photo is None:
        return None, None
    if not strokes:
        return photo, None
    alpha = np.zeros((photo.height, photo.width), dtype=bool)
    for layer in strokes:
        layer = layer.convert("RGBA").resize(photo.size)
        alpha |= np.asarray(layer)[:, :, 3] > 0
    return photo, Image.fromarray((alpha * 255).astype(np.uint8), "L")


# -- the page's words -------------------------------------------------------------------------------
# The library speaks the command line's language (`--src`, `cross_replace = 2.0`, a temp file's
# path); the page's messages name what the page shows. Every message the page shows is mapped
# here, in one place, so a new library error reads right on the page without a page-side copy.
PAGE_NAMES = {
    "src": "source prompt",
    "tgt": "target prompt",
    "guidance": "Guidance",
    "tau": "Tau",
    "cross_replace": "Cross-attention fraction",
    "self_replace": "Self-attention fraction",
    "amplify": "Amplify edited words",
    "seed": "Seed",
    "preset": "Preset",
    "mask": "painted mask",
}
_NAMES = "|".join(sorted(PAGE_NAMES, key=len, reverse=True))
_LAYER_LABEL = re.compile(r"^command line: ")  # the layer the page's values are given as (presets.py)
_ASSIGNMENT = re.compile(rf"\b({_NAMES}) = ('?)([^\s']+)\2")  # `tau = 2.0` -> `Tau 2`
_QUOTED_PROMPT = re.compile(r"--(?:src|tgt|prompt) (?=')")  # `such as --src 'a cat'` -> `such as 'a cat'`
_FLAG = re.compile(rf"--({_NAMES.replace('_', '[-_]')})\b")  # `--cross-replace` -> `Cross-attention fraction`
_PROMPT_WORD = re.compile(r"\b(src|tgt)\b")  # `the src is empty` -> `the source prompt is empty`


def _number(text: str) -> str:
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def page_words(text: str, folder: Path | None = None) -> str:
    """One message or hint of the library in the page's words."""
    if folder is not None:  # the session's files are what the user gave: the photo, the painted mask
        root = re.escape(str(folder).rstrip("/"))
        text = re.sub(rf"{root}/photo-[0-9a-f]+\.png", "the photo", text)
        text = re.sub(rf"(?:mask )?{root}/mask-[0-9a-f]+\.png", "the painted mask", text)
    text = _LAYER_LABEL.sub("", text)
    text = _ASSIGNMENT.sub(lambda m: f"{PAGE_NAMES[m[1]]} {_number(m[3])}", text)
    text = _QUOTED_PROMPT.sub("", text)
    text = _FLAG.sub(lambda m: PAGE_NAMES[m[1].replace("-", "_")], text)
    return _PROMPT_WORD.sub(lambda m: PAGE_NAMES[m[1]], text)


def page_message(exc: IcdEditError, folder: Path | None = None) -> str:
    """What the page says for a library error: its message and hint in the page's words."""
    message = page_words(exc.message, folder)
    message = message[:1].upper() + message[1:]
    return f"{message} ({page_words(exc.hint, folder)})" if exc.hint else message


def page_error(message: str):
    """A message for the page, not the server's console: Gradio shows it (as HTML, hence escaped)
    and, told so, prints no traceback for it."""
    import gradio as gr

    return gr.Error(html.escape(message), print_exception=False)


# -- the bundled example photos ----------------------------------------------------------------------
# (photo, source prompt, target prompt): the photos of examples/ (examples/README.md), shipped
# inside the wheel as icdedit/examples (pyproject.toml) and read from the checkout otherwise.
EXAMPLES = (
    ("chelsea.jpg", "a photo of a cat", "a photo of a tiger"),
    ("coffee.jpg", "a cup of coffee", "a cup of tea"),
    ("astronaut.jpg", "a photo of an astronaut", "a photo of a robot"),
)


def examples_dir() -> Path | None:
    """The folder holding every example photo: in the installed package, or examples/ beside it
    in a checkout; None (the page shows no examples) when neither has them all."""
    for candidate in (PACKAGE_DIR / "examples", PACKAGE_DIR.parent / "examples"):
        if all((candidate / name).is_file() for name, _, _ in EXAMPLES):
            return candidate
    return None


def page_examples() -> list[list[str]]:
    """The examples as the page's rows: [photo path, source prompt, target prompt]."""
    folder = examples_dir()
    return [[str(folder / name), src, tgt] for name, src, tgt in EXAMPLES] if folder else []


# -- the page --------------------------------------------------------------------------------------
def build_app(session: UiSession):
    """The Gradio page over `session`. Edits follow the sliders when released (debounced: a new
    edit replaces a waiting one) and the Edit button; errors appear on the page."""
    import gradio as gr

    defaults = resolve_settings(session.spec)
    presets = sorted(builtin_presets())
    p2p = edit_method(defaults.method).controls_attention

    def run(value, src, tgt, preset, guidance, tau, cross, self_, amplify, seed):
        photo, mask = mask_from_editor(value)
        if photo is None:
            raise page_error("Upload a photo first, or click one of the examples.")
        page = PageEdit(
            photo, src or "", tuple((tgt or "").splitlines()), preset or None, guidance, tau, cross, self_,
            amplify, int(seed or 0), mask,
        )  # fmt: skip
        try:
            result = session.edit(page)
        except IcdEditError as exc:  # the user's to fix: said on the page, nothing on the console
            raise page_error(page_message(exc, session.folder)) from None
        except RuntimeError as exc:  # out of memory and the like: one line for whoever runs the server
            print(f"icdedit ui: an edit failed: {first_line(exc)}", file=sys.stderr, flush=True)
            raise page_error(f"The edit failed: {first_line(exc)}") from None
        status = "inverted the photo, then edited" if result.inverted else "reused the photo's inversion"
        return (
            (result.original, result.images[0]),
            result.images,
            result.command,
            [str(result.image_file), str(result.latent_file)],
            status,
        )

    with gr.Blocks(title="icdedit") as app:
        gr.Markdown(f"## icdedit: edit a photo with words ({session.spec.name})")
        with gr.Row():
            with gr.Column():
                photo = gr.ImageMask(
                    label="Photo: upload, then paint where the edit may change (optional)",
                    type="pil",
                    sources=["upload", "clipboard"],
                    format="png",
                    elem_id="photo",
                )
                src = gr.Textbox(label="Source prompt (describes the photo)", elem_id="src")
                describe = gr.Button("Describe the photo (its caption as the source prompt)", elem_id="describe")
                tgt = gr.Textbox(label="Target prompt(s), one per line", lines=2, elem_id="tgt")
                preset = gr.Dropdown(presets, value=session.spec.default_preset, label="Preset", elem_id="preset")
                guidance = gr.Slider(0, 30, value=defaults.guidance, step=0.5, label="Guidance", elem_id="guidance")
                tau = gr.Slider(0, 1, value=defaults.tau, step=0.05, label="Tau (dynamic guidance)", elem_id="tau")
                cross = gr.Slider(0, 1, value=defaults.cross_replace, step=0.05, label="Cross-attention fraction",
                                  visible=p2p)  # fmt: skip
                self_ = gr.Slider(0, 1, value=defaults.self_replace, step=0.05, label="Self-attention fraction",
                                  visible=p2p)  # fmt: skip
                amplify = gr.Slider(0, 10, value=defaults.amplify, step=0.5, label="Amplify edited words", visible=p2p)
                seed = gr.Number(value=0, precision=0, label="Seed")
                button = gr.Button("Edit", variant="primary", elem_id="edit")
            with gr.Column():
                before_after = gr.ImageSlider(label="Before / after", type="pil", elem_id="result")
                gallery = gr.Gallery(label="Every target", elem_id="gallery")
                status = gr.Markdown(elem_id="status")
                command = gr.Textbox(label="The same edit on the command line", buttons=["copy"], elem_id="command")
                files = gr.File(label="Download the edit and the photo's latent", file_count="multiple")
        examples = page_examples()
        if examples:
            gr.Examples(examples, [photo, src, tgt], label="Examples: click one to load its photo and prompts")
        inputs = [photo, src, tgt, preset, guidance, tau, cross, self_, amplify, seed]
        outputs = [before_after, gallery, command, files, status]
        edit = {"trigger_mode": "always_last", "concurrency_id": "edit"}  # one queue: one edit at a time
        button.click(run, inputs, outputs, **edit)
        tgt.submit(run, inputs, outputs, **edit)
        for slider in (guidance, tau, cross, self_, amplify):
            slider.release(run, inputs, outputs, **edit)

        def preset_values(name):
            """A preset sets the sliders (and shows Prompt-to-Prompt's where its method uses them)."""
            chosen = resolve_settings(session.spec, name or None)
            shown = edit_method(chosen.method).controls_attention
            return (
                chosen.guidance,
                chosen.tau,
                gr.update(value=chosen.cross_replace, visible=shown),
                gr.update(value=chosen.self_replace, visible=shown),
                gr.update(value=chosen.amplify, visible=shown),
            )

        preset.change(preset_values, [preset], [guidance, tau, cross, self_, amplify])

        def describe_photo(value):
            photo, _ = mask_from_editor(value)
            if photo is None:
                raise page_error("Upload a photo first, or click one of the examples.")
            try:
                return session.describe(photo)
            except IcdEditError as exc:
                raise page_error(page_message(exc, session.folder)) from None

        describe.click(describe_photo, [photo], [src], concurrency_id="edit")
    return app


def serve(
    session: UiSession,
    host: str,
    port: int,
    max_upload_mb: int = 25,
    *,
    share: bool = False,
    open_browser: bool = False,
    say=lambda line: print(line, file=sys.stderr, flush=True),
    block: bool = True,
):
    """Serve the page; with `block`, until Ctrl-C or SIGTERM, then remove the session's folder.
    Without it, return the running app (its `close()` stops it)."""
    with StopRequest() as stop:
        app = launch(build_app(session), host, port, max_upload_mb, share, allowed=examples_dir())
        announce(app, host, port, share, say, open_browser)
        if not block:
            return app
        wait_until_stopped(app, session.folder, stop, say)
