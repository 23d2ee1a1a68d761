"""How an output was made, recorded in the output itself, and read back (`icdedit info`).

Every image icdedit writes carries a record: a JSON object (the `icdedit` text of a PNG, the
comment of a JPEG, the ImageDescription of a WebP or TIFF; `images.save_image` writes it) with
the version, the command, the model, the prompts, the seed and every setting as it was used
(resolved: never "auto"), and beside it an Automatic1111-style `parameters` text (PNG text;
EXIF UserComment for JPEG and WebP) that existing "PNG info" readers show. Latent files carry
theirs in the safetensors header (latents.py). `reproduce_command` turns a record back into the
command line that makes the image again.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

from . import __version__
from .errors import InputError

RECORD_KEY = "icdedit"  # the JSON record's key (PNG text chunk; inside the JPEG comment's JSON)
PARAMETERS_KEY = "parameters"  # Automatic1111's key, which PNG-info readers look for
# settings the command line spells as flags, in the order a reproduce command lists them
SETTING_FLAGS = {
    "guidance": "--guidance",
    "tau": "--tau",
    "cross_replace": "--cross-replace",
    "self_replace": "--self-replace",
    "mode": "--mode",
    "method": "--method",
    "amplify_prompt": "--amplify-prompt",
    "amplify": "--amplify",
}


# -- what goes into a record -------------------------------------------------------------------------
def pixel_hash(image) -> str:
    """sha256 of the decoded RGB pixels and the size: the same for a photo re-saved losslessly
    or in another format, different for any pixel changed."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}\n".encode())
    digest.update(rgb.tobytes())
    return "sha256:" + digest.hexdigest()


def source_record(path: Path, image=None) -> dict:
    """The input an output was made from: a photo's name, pixel hash and size; or a latent file's name."""
    if image is None:
        return {"file": Path(path).name, "kind": "latent"}
    return {"file": Path(path).name, "kind": "photo", "pixels": pixel_hash(image), "size": list(image.size)}


def input_record(path: Path, source) -> dict:
    """What an edit or reconstruction read (a sources.Source): a photo, or a latent file with
    the seed and the photo's name it recorded."""
    made = source_record(path, source.image)
    if source.latent is not None:
        made.update(seed=source.latent.seed, source_image=source.latent.metadata.get("source_image"))
    return made


def dtype_name(dtype) -> str:
    from .loader import DTYPES

    return next((name for name, value in DTYPES.items() if value == dtype), str(dtype))


def run_record(editor, decoder: str | None = None) -> dict:
    """Where the model ran, as it ran: device, dtype and attention kernel actually used."""
    bundle = editor.bundle
    made = {"device": str(bundle.device), "dtype": dtype_name(bundle.dtype), "attention": bundle.attention}
    return {**made, **({"decoder": decoder} if decoder else {})}


def model_record(spec, asked: str | None = None) -> dict:
    """The model asked for and what it resolved to (the files that identify it)."""
    made = {"name": spec.name, "asked": str(asked) if asked else spec.name, **spec.identity()}
    if spec.path is not None:
        made["path"] = str(Path(spec.path).resolve())
    return made


def image_record(command: str, *, model: dict, seed: int, run: dict, **fields) -> dict:
    """One image's record: version, command, model, seed, how it ran, and the command's own
    fields (prompts, settings, source, size, ...); None fields are left out. `decoder` is kept
    at the top too: a preview's images say they are approximate where readers already look."""
    record = {"icdedit_version": __version__, "command": command, "model": model, "seed": seed}
    record.update({k: v for k, v in fields.items() if v is not None})
    record["run"] = run
    if run.get("decoder"):
        record["decoder"] = run["decoder"]
    return record


def parameters_text(record: dict) -> str:
    """Automatic1111's `parameters`: the prompt on the first line, then `Key: value, ...`."""
    prompt = record.get("target") or record.get("prompt") or ""
    settings = record.get("settings") or {}
    size = record.get("size")
    pairs = [
        ("Steps", record.get("steps")),
        ("Seed", record.get("seed")),
        ("CFG scale", settings.get("guidance", record.get("guidance"))),
        ("Tau", settings.get("tau", record.get("tau"))),
        ("Size", f"{size[0]}x{size[1]}" if size else None),
        ("Model", (record.get("model") or {}).get("name")),
        ("Source prompt", record.get("prompt") if record.get("target") else None),
        ("Method", settings.get("method")),
        ("Cross replace", settings.get("cross_replace")),
        ("Self replace", settings.get("self_replace")),
        ("Dtype", (record.get("run") or {}).get("dtype")),
        ("Command", record.get("command")),
        ("Version", f"icdedit {record.get('icdedit_version')}"),
    ]
    shown = ", ".join(f"{key}: {_a1111_value(value)}" for key, value in pairs if value is not None)
    return f"{prompt}\n{shown}"


def _a1111_value(value) -> str:
    """A value as A1111 writes it: quoted when it holds a comma or colon (its parser splits there)."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(text) if any(c in text for c in ',:\n"') else text


def record_text(record: dict) -> dict[str, str]:
    """What `images.save_image` writes into the file."""
    return {RECORD_KEY: json.dumps(record), PARAMETERS_KEY: parameters_text(record)}


# -- reading it back ---------------------------------------------------------------------------------
def read_record(path: Path) -> dict:
    """The record an image or latent file carries; InputError when it has none."""
    from .images import check_regular_file
    from .latents import is_latent_file

    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}", "check the path")
    check_regular_file(path, "image")
    record = _latent_record(path) if is_latent_file(path) else _image_record(path)
    if record is None:
        raise InputError(
            f"{path} carries no icdedit record", "only images and latent files written by icdedit have one"
        )
    return record


def _image_record(path: Path) -> dict | None:
    from PIL import Image, UnidentifiedImageError

    from .images import EXIF_IMAGE_DESCRIPTION

    try:
        with Image.open(path) as image:
            texts = [getattr(image, "text", {}).get(RECORD_KEY), image.info.get("comment")]
            texts.append(image.getexif().get(EXIF_IMAGE_DESCRIPTION))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputError(f"{path} is not an image PIL can read", "give an image or latent file icdedit wrote") from None
    for text in texts:
        record = _parse(text)
        if record is not None:
            return record
    return None


def _parse(text) -> dict | None:
    """The record from a PNG text (the JSON itself) or a comment/description (JSON of the texts)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get(RECORD_KEY), str):  # {"icdedit": "<json>", ...}
        try:
            data = json.loads(data[RECORD_KEY])
        except ValueError:  # an older record, whose "icdedit" was the version
            pass
    return data if isinstance(data, dict) and "command" in data else None


def _latent_record(path: Path) -> dict | None:
    from .latents import LATENT_FORMAT

    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception:  # noqa: BLE001 - safetensors raises its own and OS errors; any is "no record"
        return None
    if metadata.get("format") != LATENT_FORMAT:
        return None
    if metadata.get("record"):
        return _parse(metadata["record"])
    record = {"command": _latent_command(metadata), "prompt": metadata.get("prompt", ""), "latent": dict(metadata)}
    if metadata.get("seed", "").isdigit():
        record["seed"] = int(metadata["seed"])
    if metadata.get("model"):
        record["model"] = {"name": metadata["model"]}
    if metadata.get("source_image"):
        record["source"] = {"file": metadata["source_image"], "kind": "photo"}
    return record  # a file written before records: what its metadata says


def _latent_command(metadata: dict) -> str:
    if metadata.get("origin") == "generate":
        return "generate"
    return "edit" if metadata.get("rows") else "invert"


# -- the command that makes it again -----------------------------------------------------------------
def reproduce_command(record: dict) -> list[str]:
    """The icdedit command line that makes the output again (same device and seed): the input by
    its recorded name, every setting that differs from the command's defaults."""
    command = record.get("command")
    model = record.get("model")
    model = (model.get("asked") or model.get("name")) if isinstance(model, dict) else model  # older: a name
    if command == "generate":
        args = ["generate", record["prompt"]]
        settings = record.get("settings") or record  # older records: the settings at the top
        args += _flag("--guidance", settings.get("guidance"), 7.0) + _flag("--tau", settings.get("tau"), 1.0)
        size, resolution = settings.get("size") or record.get("size"), record.get("resolution")
        if size and resolution and list(size) != [resolution, resolution]:
            args += ["--width", str(size[0]), "--height", str(size[1])]
    elif command == "reconstruct":
        args = ["reconstruct", _source_name(record), "--prompt", record["prompt"]]
        args += _flag("--guidance", record.get("guidance"), 0.0) + _flag("--tau", record.get("tau"), 0.8)
    elif command == "invert":
        args = ["invert", _source_name(record), "--prompt", record["prompt"]]
    elif command == "edit":
        args = ["edit", _source_name(record), "--src", record["prompt"]]
        for target in record.get("targets") or [record["target"]]:
            args += ["--tgt", target]
        axes = record.get("grid") or []
        args += _setting_flags(record, skip={key for key, _ in axes})
        for key, values in axes:  # a contact sheet: its grid again
            args += ["--grid", f"{key}=" + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)]
        mask = record.get("mask")
        if mask:
            args += ["--mask", mask["file"]] + _flag("--mask-feather", mask.get("feather"), 0.0)
    else:
        raise InputError(f"the record names no command icdedit can repeat ({command!r})", "")
    args += ["--seed", str(record.get("seed", 0))]
    args += ["--size", str(record["size_flag"])] if record.get("size_flag") else []
    args += ["--model", str(model)] if model else []
    return ["icdedit", *args, *_run_flags(record.get("run") or {})]


def _source_name(record: dict) -> str:
    return (record.get("source") or {}).get("file", "PHOTO")


def _flag(flag: str, value, default) -> list[str]:
    if value is None or value == default:
        return []
    return [flag, f"{value:g}" if isinstance(value, float) else str(value)]


def _setting_flags(record: dict, skip=frozenset()) -> list[str]:
    """The settings the edit was made with that its defaults would not give, and its words."""
    settings = record.get("settings") or {}
    args = []
    for name in record.get("non_default") or ():
        if name in SETTING_FLAGS and name not in skip and name != "amplify" and settings.get(name) is not None:
            args += _flag(SETTING_FLAGS[name], settings[name], None)
    words = record.get("words_given") or {}
    if words.get("no_blend"):
        args.append("--no-blend")
    blend = words.get("blend") or ()
    if blend:  # the given pairs as --blend's two word lists (every source word with every target word)
        args += ["--blend", " ".join(dict.fromkeys(s for s, _ in blend)), " ".join(dict.fromkeys(t for _, t in blend))]
    given = words.get("amplify")
    amplify = ["none"] if given == "none" else [f"{word}={value:g}" for word, value in given or ()]
    if "amplify" in (record.get("non_default") or ()) and "amplify" not in skip:
        amplify.append(f"{settings['amplify']:g}")
    for value in amplify:
        args += ["--amplify", value]
    return args


def _run_flags(run: dict) -> list[str]:
    """The device (its type: the same kind of device gives the same pixels), a dtype other than
    what auto gives there, a kernel other than SDPA, the preview decoder."""
    device = str(run.get("device") or "cpu")
    kind = device.split(":")[0]
    args = ["--device", kind]
    auto = "fp16" if kind in ("cuda", "mps") else "fp32"
    if run.get("dtype") and run["dtype"] != auto:
        args += ["--dtype", run["dtype"]]
    if run.get("attention") not in (None, "sdpa"):
        args += ["--attention", run["attention"]]
    if run.get("decoder"):
        args.append("--preview")
    return args


def shell_line(args: list[str]) -> str:
    return shlex.join(args)


# -- the records of each command's outputs -----------------------------------------------------------
def edit_record(plan, cell, index: int, run: dict, **extra) -> dict:
    """The record of target `index` of a prepared edit `cell` of `plan` (plans.EditPlan): a plain
    edit, a grid cell or a batch row alike. `extra`: what only some have (grid_cell, batch_item)."""
    from .captions import caption_fields
    from .methods import edit_method
    from .preparation import resolve_settings

    source = plan.source
    defaults = resolve_settings(plan.spec, None).as_dict()
    settings = {k: v for k, v in cell.settings.as_dict().items() if k != "model"}
    differ = [k for k, v in settings.items() if k in SETTING_FLAGS and v != defaults.get(k)]
    if source.latent is not None:  # generated noise has defaults of its own: say every setting
        differ = [k for k in SETTING_FLAGS if k in settings]
    unread = set(edit_method(cell.settings.method).ignored(differ))  # giving those would be refused
    differ = [k for k in differ if k not in unread]
    words = cell.words[index] if cell.words else None
    mask = plan.mask
    record = image_record(
        "edit",
        model=model_record(plan.spec, getattr(plan, "asked_model", None)),
        seed=extra.pop("seed", plan.seed),
        run=run,
        prompt=cell.source,
        target=cell.targets[index],
        targets=list(cell.targets),
        settings=settings,
        non_default=differ,
        words=words_record(words) if words is not None else None,
        words_given=_words_given(cell),
        amplify_prompt=cell.amplify_prompt if cell.amplify_prompt != cell.source else None,
        source=input_record(plan.input, source),
        mask={"file": mask.name, "feather": mask.feather} if mask is not None else None,
        size_flag=plan.size,
        steps=plan.spec.plan().num_reverse_steps,
        **caption_fields(getattr(plan, "caption", None), cell.source),
        **extra,
    )
    if words is not None and "amplify" in differ and record.get("words_given"):
        record["non_default"] = [k for k in differ if k != "amplify"]  # explicit words: the factor reads nothing
    return record


def words_record(words) -> dict:
    """An edit's words as recorded (an image's record, edit's --json, a batch row's line)."""
    return {
        "mode": words.mode,
        "amplify": dict(words.amplify),
        "blend": [list(words.blend_source), list(words.blend_target)],
        "derived": words.derived,
    }


def _words_given(cell) -> dict | None:
    """The words to give on a command line for this edit's words, or None when deriving them
    again from the prompts and settings gives them (nothing to give)."""
    if not cell.words:
        return None
    from .p2p.plan import derive_all_edit_words

    settings = cell.settings
    derived = derive_all_edit_words(cell.source, list(cell.targets), settings.mode, settings.amplify)
    given = {}
    if [w.amplify for w in derived] != [w.amplify for w in cell.words]:
        amplify = list(dict.fromkeys(pair for w in cell.words for pair in w.amplify))
        given["amplify"] = [list(p) for p in amplify] if amplify else "none"
    blends = [(w.blend_source, w.blend_target) for w in cell.words]
    if [(w.blend_source, w.blend_target) for w in derived] != blends:
        blend = list(dict.fromkeys((s, t) for w in cell.words for s in w.blend_source for t in w.blend_target))
        given.update({"blend": [list(p) for p in blend]} if blend else {"no_blend": True})
    return given or None


def processing_size(result) -> list[int]:
    """[width, height] an edit was computed at (values.EditResult): its latents' size in pixels."""
    from .latents import LATENT_SCALE

    return [result.latents.shape[-1] * LATENT_SCALE, result.latents.shape[-2] * LATENT_SCALE]


def grid_axes(plan) -> list:
    """A --grid's axes as a record holds them: [[key, [values]], ...]."""
    return [[key, list(values)] for key, values in plan.grid.axes]


def grid_cell(plan, cell) -> dict:
    """A grid cell's own values (the axes' settings)."""
    return {key: getattr(cell.settings, key) for key in plan.grid.keys}
