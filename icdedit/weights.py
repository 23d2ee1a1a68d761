"""What a run needs that is not on disk, and fetching it on first use, as diffusers'
`from_pretrained` and huggingface-cli do: every command that runs a model (and the library's
`load_model`) calls `ensure_weights`, which names every missing file (the teacher, each LoRA,
the base pipeline's files, the preview decoder), says what it fetches and how much, and fetches
it through `download.py`. Offline (`--offline`, HF_HUB_OFFLINE=1), or a file that nothing can
fetch: one error naming every missing file and the command that fetches them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .download import (
    approx_bytes,
    download_base,
    download_command,
    download_icd_files,
    hub_snapshot,
    in_units,
    offline,
)
from .errors import ModelError

if TYPE_CHECKING:  # annotations only: no torch here
    from .specs import ModelSpec


# -- what a run needs that is not on disk -----------------------------------------------------------
class MissingWeightsError(ModelError):
    """Weight files a run needs are not on disk: `spec` says which model, `missing` every file
    (the message names them all, not the first one found)."""

    def __init__(self, message: str, hint: str, spec: ModelSpec, missing: tuple[Needed, ...] = ()):
        super().__init__(message, hint)
        self.spec = spec
        self.missing = missing


@dataclass(frozen=True)
class Needed:
    """One file (or folder) a run needs that is not on disk, and where it would come from."""

    what: str  # "teacher", "forward LoRA", "VAE", "preview decoder 'taesd'", ...
    location: str  # where it is looked for: a path, or hub repository/file
    source: str | None  # the archive address, hub repository, or None: nothing can fetch it
    size_bytes: int | None = None  # approximate size of the whole source (shared by its files)
    command: str | None = None  # the `icdedit download ...` that fetches it

    def describe(self) -> str:
        return f"{self.what} {self.location}"


# Names people know the parts of a diffusers base folder by (for naming what is missing).
BASE_PART_NAMES = {
    "model_index.json": "pipeline index",
    "scheduler": "scheduler config",
    "tokenizer": "tokenizer",
    "tokenizer_2": "second tokenizer",
    "text_encoder": "text encoder",
    "text_encoder_2": "second text encoder",
    "vae": "VAE",
    "unet": "UNet config",
}


def _base_part_name(file: str) -> str:
    head = file.split("/", 1)[0]
    name = BASE_PART_NAMES.get(head, head)
    return f"{name} config" if file.endswith("config.json") and name in ("text encoder", "VAE") else name


def _base_file_present(folder: Path, file: str) -> bool:
    if file.endswith("/*"):  # a folder of files (tokenizer): some files in it
        sub = folder / file.removesuffix("/*")
        return sub.is_dir() and any(sub.iterdir())
    return (folder / file).is_file()


def missing_base_files(spec: ModelSpec, variant: str = "fp32") -> list[Needed]:
    """The base pipeline's files icdedit reads that are not on disk (the hub cache, or the local
    folder). Weights count as present when one variant is complete; when none is, those of
    `variant` (fp32 or fp16) are named."""
    traits = spec.traits
    folder = Path(spec.base) if spec.base_is_local else hub_snapshot(spec.base)

    def where(file: str) -> str:  # a folder of files (tokenizer/*) is named as the folder
        file = file.removesuffix("*")
        return str(Path(spec.base) / file) + "/" * file.endswith("/") if spec.base_is_local else f"{spec.base}/{file}"

    configs = [f for f in traits.base_files if f != "scheduler/*"]  # no scheduler config: SD's default applies
    if folder is None:
        missing = [*configs, *traits.base_weights[variant]]
    else:
        missing = [f for f in configs if not _base_file_present(folder, f)]
        if not any(all((folder / w).is_file() for w in weights) for weights in traits.base_weights.values()):
            missing += list(traits.base_weights[variant])
    if not missing:
        return []
    source = None if spec.base_is_local else spec.base
    size = None if spec.base_is_local else traits.approx_base_bytes[variant]
    command = None if spec.base_is_local else download_command(spec)
    return [Needed(_base_part_name(f), where(f), source, size, command) for f in missing]


def missing_icd_files(spec: ModelSpec) -> list[Needed]:
    """The teacher and LoRAs that are not on disk, each with the archive that holds it."""
    needed = []
    for path, what, key in (
        (spec.teacher, "teacher", "teacher"),
        (spec.forward_lora, "forward LoRA", "loras"),
        (spec.reverse_lora, "reverse LoRA", "loras"),
    ):
        if not path.is_file():
            source = spec.sources.get(key)
            command = download_command(spec) if source else None
            needed.append(Needed(what, str(path), source, approx_bytes(spec, key), command))
    return needed


def missing_for_run(spec: ModelSpec, variant: str = "fp32") -> list[Needed]:
    """Everything a model needs to run that is not on disk (a random-weight model needs nothing)."""
    if spec.random_weights:
        return []
    return [*missing_icd_files(spec), *missing_base_files(spec, variant)]


def by_source(missing: list[Needed]) -> dict[str | None, list[Needed]]:
    """The missing files grouped by what fetches them (one archive holds both LoRAs)."""
    groups: dict[str | None, list[Needed]] = {}
    for needed in missing:
        groups.setdefault(needed.source, []).append(needed)
    return groups


def total_bytes(missing: list[Needed]) -> int:
    """Approximate bytes to fetch: each source counted once."""
    return sum(group[0].size_bytes or 0 for source, group in by_source(missing).items() if source)


def _origin(source: str, named: bool = True) -> str:
    """Where a source is fetched from, as a person reads it: an address, or the hub."""
    if "://" in source:
        return source
    return f"the Hugging Face hub ({source})" if named else "the Hugging Face hub"


def human_size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def missing_error(spec: ModelSpec, missing: list[Needed], why: str | None) -> MissingWeightsError:
    """One line naming every missing file, and the commands that fetch them. `why`: the reason
    nothing is fetched now (offline), or None when some file has no source at all."""
    commands = list(dict.fromkeys(n.command for n in missing if n.command))
    unfetchable = [n for n in missing if n.source is None]
    message = f"weights of model {spec.name!r} not found: {', '.join(n.describe() for n in missing)}"
    if unfetchable:
        hint = f"put {', '.join(n.location for n in unfetchable)} in place yourself (no download address)"
        if commands:
            hint += f"; `{'` and `'.join(commands)}` fetches the rest"
    else:
        sources = ", ".join(dict.fromkeys(_origin(n.source, named=False) for n in missing))
        size = human_size(total_bytes(missing))
        hint = f"run `{'` and `'.join(commands)}` (about {size} from {sources}; needs network)"
        if why:
            hint = f"{why}: {hint}, or {OFFLINE_UNDO[why]} to fetch them on first use"
    return MissingWeightsError(message, hint, spec, tuple(missing))


OFFLINE_UNDO = {"--offline is set": "leave out --offline", "HF_HUB_OFFLINE is set": "unset HF_HUB_OFFLINE"}


def offline_reason(offline_flag: bool) -> str | None:
    """Why nothing may be fetched now, as errors say it (a key of OFFLINE_UNDO); None: online."""
    if offline_flag:
        return "--offline is set"
    if offline():
        return "HF_HUB_OFFLINE is set"
    return None


def require_weights(spec: ModelSpec, variant: str = "fp32") -> None:
    """Raise one MissingWeightsError naming every file `spec` needs that is not on disk."""
    missing = missing_for_run(spec, variant)
    if missing:
        raise missing_error(spec, missing, offline_reason(False))


# -- fetching what a run needs, on first use ------------------------------------------------------
def preview_needed(decoder) -> list[Needed]:
    """The preview decoder (preview.PreviewDecoder) when it is asked for and not on disk."""
    if decoder is None or decoder.present:
        return []
    what = f"preview decoder {decoder.name!r}"
    return [Needed(what, str(decoder.folder), decoder.hub_id, decoder.approx_bytes, f"icdedit download {decoder.name}")]


def announce(spec: ModelSpec, missing: list[Needed], reporter) -> None:
    """Say, before any byte is fetched, what is fetched, how much and from where."""
    reporter.note(f"fetching what model {spec.name!r} needs (about {human_size(total_bytes(missing))}):")
    for source, group in by_source(missing).items():
        names = ", ".join(n.describe() for n in group)
        reporter.note(f"  {names} ({human_size(group[0].size_bytes)}) from {_origin(source)}")


def ensure_weights(spec: ModelSpec, variant: str = "fp32", *, offline_flag: bool = False, reporter=None, decoder=None):
    """Fetch what `spec` (and the preview `decoder`, if given) need and is not on disk, without
    asking, as diffusers' `from_pretrained` and huggingface-cli do: announced with sizes on the
    reporter, bytes on its progress bar. Offline (`--offline`, HF_HUB_OFFLINE), or a missing file
    that nothing can fetch: one MissingWeightsError naming every missing file. Returns what was
    fetched."""
    from .reporting import Reporter

    reporter = reporter or Reporter()
    icd, base, preview = _missing(spec, variant, decoder)
    missing = [*icd, *base, *preview]
    if not missing:
        return []
    why = offline_reason(offline_flag)
    if why or any(n.source is None for n in missing):
        raise missing_error(spec, missing, why)
    with _one_fetch_at_a_time():  # several workers of one machine (Ray, torchrun) fetch once
        icd, base, preview = _missing(spec, variant, decoder)  # another process may have fetched them
        missing = [*icd, *base, *preview]
        if missing:
            _fetch(spec, variant, decoder, icd, base, preview, reporter)
    return missing


def _missing(spec: ModelSpec, variant: str, decoder) -> tuple[list, list, list]:
    icd = [] if spec.random_weights else missing_icd_files(spec)
    base = [] if spec.random_weights else missing_base_files(spec, variant)
    return icd, base, preview_needed(decoder)


@contextmanager
def _one_fetch_at_a_time():
    """A lock (flock, blocking) on the weights folder: the processes of one machine wait for
    each other's fetch instead of appending to the same partial file."""
    from .paths import weights_home

    home = weights_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        handle = open(home / ".fetch.lock", "a")
    except OSError:  # a read-only home: the fetch itself will say what is wrong
        yield
        return
    with handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock here: fetch unlocked
            pass
        yield


def _fetch(spec: ModelSpec, variant: str, decoder, icd, base, preview, reporter) -> None:
    missing = [*icd, *base, *preview]
    announce(spec, missing, reporter)
    started = time.monotonic()
    if icd:
        download_icd_files(spec, progress=in_units(reporter.bytes_progress()))
    if base:
        done = reporter.stage(f"fetching {spec.base} from the Hugging Face hub", None)
        download_base(spec, variant)
        done()
    if preview:
        from .preview import download_preview_decoder

        download_preview_decoder(decoder)
    reporter.note(f"fetched {len(missing)} file(s) for model {spec.name!r} in {time.monotonic() - started:.0f} s")
