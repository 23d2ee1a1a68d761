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
import shlex
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .editor import EditJob, Editor, Inversion
from .errors import IcdEditError, InputError, first_line
from .families import controls_attention
from .images import load_image, save_image
from .latents import save_latent
from .masks import fit_mask, read_mask
from .preparation import explicit, prepare_edit, resolve_settings
from .presets import builtin_presets, check_seed
from .sources import latent_metadata

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


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
    notes: list[str] = field(default_factory=list)


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
        run_options: dict[str, str] | None = None,
    ):
        self.editor = editor
        self.model = model  # as given to --model, for the command line it shows
        self.run_options = run_options or {}  # --device / --dtype / --attention as the server runs
        self._lock = threading.Lock()  # one edit at a time on the one model, whatever the page queues
        self.folder = Path(folder or tempfile.mkdtemp(prefix="icdedit-ui-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[tuple, Inversion] = OrderedDict()
        self._cache_size = cache_size

    @property
    def spec(self):
        return self.editor.spec

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

    def _values(self, page: PageEdit, method: str) -> dict:
        values = {"guidance": page.guidance, "tau": page.tau}
        if controls_attention(method):
            values.update(cross_replace=page.cross_replace, self_replace=page.self_replace)
        return values

    def edit(self, page: PageEdit) -> PageResult:
        with self._lock:
            return self._edit(page)

    def _edit(self, page: PageEdit) -> PageResult:
        check_seed(page.seed, "seed")
        targets = [t.strip() for t in page.targets if t.strip()]
        if not targets:
            raise InputError("give a target prompt", "what should the photo show instead?")
        photo_file = self._photo_file(page.photo)
        method = resolve_settings(self.spec, page.preset).method
        values = self._values(page, method)
        settings = resolve_settings(self.spec, page.preset, values)
        words = None
        if controls_attention(settings.method) and page.amplify is not None:
            derived = prepare_edit(self.spec, page.src, targets, settings).words
            words = [(w, float(page.amplify)) for w in dict.fromkeys(w for e in derived for w, _ in e.amplify)]
        prepared = prepare_edit(self.spec, page.src, targets, settings, amplify=words, given=explicit(values))
        mask_file = self._mask_file(page.mask)
        inversion, inverted = self.inversion(photo_file, page.src, page.seed)
        mask = None
        if mask_file is not None:
            mask = fit_mask(read_mask(mask_file), inversion.processed_size)
        result = self.editor.edit_many([EditJob.prepared(inversion, prepared, mask)])[0]
        image_file = self.folder / f"edit-{_digest(result.targets[0])}.png"
        save_image(result.targets[0], image_file)
        prompt_digest = hashlib.sha256(page.src.encode()).hexdigest()[:8]
        latent_file = self.folder / f"{photo_file.stem}-{prompt_digest}-seed{page.seed}.safetensors"
        if inverted or not latent_file.is_file():
            save_latent(latent_file, inversion.latent, latent_metadata(self.spec, inversion, photo_file))
        command = self.command(page, photo_file, targets, values, words, mask_file)
        return PageResult(result.targets, load_image(photo_file), command, image_file, latent_file, inverted)

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

    def command(self, page, photo_file, targets, values, words, mask_file) -> str:
        """The CLI command for this edit (the same settings, files and seed)."""
        parts = ["icdedit", "edit", str(photo_file), "-s", page.src]
        for target in targets:
            parts += ["-t", target]
        if self.model:
            parts += ["-m", self.model]
        if page.preset:
            parts += ["--preset", page.preset]
        for name, value in values.items():
            if value is not None:
                parts += [f"--{name.replace('_', '-')}", f"{value:g}"]
        for word, factor in words or []:
            parts += ["--amplify", f"{word}={factor:g}"]
        if mask_file is not None:
            parts += ["--mask", str(mask_file)]
        parts += ["--seed", str(page.seed)]
        if self.editor.preview_decoder is not None:  # the server decodes with the preview decoder
            parts.append("--preview")
        for option, value in self.run_options.items():
            if value and value != "auto":
                parts += [f"--{option}", value]
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


# -- the page --------------------------------------------------------------------------------------
def build_app(session: UiSession):
    """The Gradio page over `session`. Edits follow the sliders when released (debounced: a new
    edit replaces a waiting one) and the Edit button; errors appear on the page."""
    import gradio as gr

    defaults = resolve_settings(session.spec)
    presets = sorted(builtin_presets())
    p2p = controls_attention(defaults.method)

    def run(value, src, tgt, preset, guidance, tau, cross, self_, amplify, seed):
        photo, mask = mask_from_editor(value)
        if photo is None:
            raise gr.Error("Upload a photo first.")
        page = PageEdit(
            photo, src or "", tuple((tgt or "").splitlines()), preset or None, guidance, tau, cross, self_,
            amplify, int(seed or 0), mask,
        )  # fmt: skip
        try:
            result = session.edit(page)
        except IcdEditError as exc:
            raise gr.Error(str(exc)) from None
        except RuntimeError as exc:  # out of memory and the like: say so, keep serving
            raise gr.Error(f"the edit failed: {first_line(exc)}") from None
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
            shown = controls_attention(chosen.method)
            return (
                chosen.guidance,
                chosen.tau,
                gr.update(value=chosen.cross_replace, visible=shown),
                gr.update(value=chosen.self_replace, visible=shown),
                gr.update(value=chosen.amplify, visible=shown),
            )

        preset.change(preset_values, [preset], [guidance, tau, cross, self_, amplify])
    return app


def serve(session: UiSession, host: str, port: int, max_upload_mb: int = 25, block: bool = True):
    app = build_app(session)
    app.queue(default_concurrency_limit=1)
    return app.launch(
        server_name=host,
        server_port=port,
        max_file_size=f"{max_upload_mb}mb",
        prevent_thread_lock=not block,
        show_error=True,
        quiet=False,
    )
