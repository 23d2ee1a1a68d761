"""Getting the weights: what is on disk (`icdedit models`) and fetching what is not
(`icdedit download`).

The iCD teacher and LoRAs come as tar.gz archives from the official release addresses
(a model YAML's `sources`). An archive is streamed to `<name>.part` in the weights folder's
`.downloads/`, resumed with an HTTP Range request after an interruption, renamed only once
its size matches what the server announced (and its sha256, where the YAML gives one), then
only the expected files are unpacked, into a staging folder, and moved into place. A partial
or corrupt download is therefore never mistaken for a complete one, and nothing outside the
weights folder is ever written. The base pipeline comes from the Hugging Face hub through
`huggingface_hub` (only the files icdedit loads), which honours HF_HOME, HF_TOKEN and
HF_HUB_OFFLINE.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .errors import ModelError, first_line
from .families import DEFAULT_FAMILY, FAMILIES
from .paths import weights_home

if TYPE_CHECKING:  # annotations only: listing and downloading import no torch (specs' schedule does)
    from .specs import ModelSpec

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# The files of a diffusers SD1.5 / SDXL folder that icdedit reads (the base UNet's weights never are).
Progress = Callable[[str, int, int | None], None]  # (what, bytes so far, total or None)


def in_units(progress: Progress | None) -> Progress | None:
    """A bytes callback that reports in MB (kB for small files), so that a progress bar's count
    column reads `120/830` with the unit in the file's line rather than a count of bytes."""
    if progress is None:
        return None

    def update(name: str, done: int, total: int | None) -> None:
        unit, scale = ("MB", 1_000_000) if total is None or total >= 10_000_000 else ("kB", 1_000)
        progress(f"{name} ({unit})", done // scale, None if total is None else max(total // scale, 1))

    return update


class DownloadError(ModelError):
    """A download or unpacking that did not complete; the message says whether a rerun resumes."""


# -- what is on disk ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartStatus:
    part: str  # "base", "teacher", "forward", "reverse"
    location: str
    present: bool
    size_bytes: int | None  # on disk when present; approximate download size when not
    source: str | None


def _tree_size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub repo, when model_index.json is in the cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency
        return None
    found = try_to_load_from_cache(repo_id, "model_index.json")
    return Path(found).parent if isinstance(found, str) else None


def base_files_present(folder: Path, family: str = DEFAULT_FAMILY) -> bool:
    traits = FAMILIES[family]
    configs = [f.removesuffix("/*") for f in traits.base_files if f != "scheduler/*"]
    if not all((folder / f).exists() for f in configs):
        return False
    return any(all((folder / w).is_file() for w in weights) for weights in traits.base_weights.values())


def base_status(spec: ModelSpec) -> PartStatus:
    folder = Path(spec.base) if spec.base_is_local else hub_snapshot(spec.base)
    if folder is not None and base_files_present(folder, spec.family):
        parts = ("text_encoder", "text_encoder_2", "vae", "tokenizer", "tokenizer_2", "scheduler", "unet")
        files = [p for sub in parts for p in (folder / sub).glob("*")]
        return PartStatus("base", str(folder), True, _tree_size([p.resolve() for p in files]), spec.base)
    location = spec.base if spec.base_is_local else f"hub {spec.base} (cache: {hub_cache_dir()})"
    return PartStatus(
        "base", location, False, None if spec.base_is_local else spec.traits.approx_base_bytes["fp32"], spec.base
    )


def hub_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return "~/.cache/huggingface/hub"


def approx_bytes(spec: ModelSpec, key: str) -> int | None:
    value = spec.sources.get(f"{key}_bytes")
    return int(float(value)) if value else None


def model_status(spec: ModelSpec) -> list[PartStatus]:
    parts = [base_status(spec)]
    for part, path, key in (
        ("teacher", spec.teacher, "teacher"),
        ("forward", spec.forward_lora, "loras"),
        ("reverse", spec.reverse_lora, "loras"),
    ):
        present = path.is_file()
        size = path.stat().st_size if present else approx_bytes(spec, key)
        parts.append(PartStatus(part, str(path), present, size, spec.sources.get(key)))
    return parts


def missing_download_bytes(spec: ModelSpec) -> int:
    """Approximate bytes still to download (each archive counted once)."""
    total, archives = 0, set()
    for status in model_status(spec):
        if status.present or status.size_bytes is None:
            continue
        if status.part in ("forward", "reverse"):
            if status.source in archives:
                continue
            archives.add(status.source)
        total += status.size_bytes
    return total


def download_command(spec: ModelSpec) -> str:
    name = spec.name if spec.path is None or spec.path.parent.name == "models" else str(spec.path)
    return f"icdedit download {name}"


# -- fetching one URL, resumable ------------------------------------------------------------------
WEB_SCHEMES = ("https", "http")


def check_address(url: str, where: str = "the model YAML's sources") -> str:
    """Only web addresses are fetched. A local path or a file:// address is refused rather than
    copied: a model YAML from elsewhere must not be able to copy files of this machine into the
    weights folder, and a file already here needs no download (put it where the YAML says)."""
    scheme = urllib.request.urlparse(url).scheme.lower()
    if scheme not in WEB_SCHEMES:
        kind = "a local file" if scheme in ("", "file") or len(scheme) == 1 else f"a {scheme}: address"
        raise DownloadError(
            f"{url!r} in {where} is {kind}, not an http(s) address",
            "put the file where the model YAML's teacher/forward_lora/reverse_lora say, or give an https:// address",
        )
    return url


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "icdedit"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - addresses come from model YAMLs


def _total_size(response, start: int) -> int | None:
    content_range = response.headers.get("Content-Range")
    if response.status == 206 and content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) + (start if response.status == 206 else 0) if length and length.isdigit() else None


def fetch(
    url: str,
    destination: Path,
    *,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60,
    progress: Progress | None = None,
) -> Path:
    """Download `url` to `destination`, resuming `destination.part`; verify size (and hash)."""
    check_address(url, "the download")
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    last_error = ""
    for attempt in range(retries + 1):
        start = part.stat().st_size if part.exists() else 0
        try:
            with _open(url, start, timeout) as response:
                if start and response.status != 206:  # the server ignored Range: start over
                    start = 0
                total = _total_size(response, start)
                if total is not None and start == total:
                    break
                with open(part, "ab" if start else "wb") as out:
                    done = start
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(destination.name, done, total)
            size = part.stat().st_size
            if total is not None and size != total:
                last_error = f"got {size} of {total} bytes"
                continue  # a short read: resume from where it stopped
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():  # Range beyond the end: the .part is bad
                part.unlink()
                last_error = "the partial file did not fit the server's: restarted"
                continue
            raise DownloadError(
                f"{url}: the server answered {exc.code} {exc.reason}", "check the address in the model YAML's sources"
            ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error = str(getattr(exc, "reason", exc))
        if attempt < retries:
            time.sleep(min(2**attempt * 0.2, 5))
    else:
        if not part.exists() or part.stat().st_size == 0:
            part.unlink(missing_ok=True)
            host = urllib.request.urlparse(url).netloc
            raise DownloadError(
                f"cannot reach {host} to fetch {url} ({last_error})",
                "check the network connection (or proxy settings) and run the same command again",
            )
        raise DownloadError(
            f"{url}: download interrupted ({last_error}); {part} keeps what arrived",
            "run the same command again to resume",
        )
    if sha256:
        digest = _sha256(part)
        if digest != sha256.lower():
            part.unlink()
            raise DownloadError(f"{url}: sha256 {digest} does not match {sha256}", "run the command again")
    os.replace(part, destination)
    return destination


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


# -- unpacking -----------------------------------------------------------------------------------
def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise DownloadError(
            f"{archive}: unsafe archive member {member.name!r} (path outside the target)",
            "the archive is not the official one; delete it and download again",
        )
    if member.issym() or member.islnk():
        raise DownloadError(
            f"{archive}: archive member {member.name!r} is a link", "the archive is not the official one"
        )


def unpack(archive: Path, wanted: dict[str, Path]) -> list[Path]:
    """Extract the members whose file names are keys of `wanted` to their paths; nothing else.

    Every member is checked first (no absolute paths, no '..', no links), the files are written
    to a staging folder beside the targets, and moved into place only when all were found.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            found = {
                PurePosixPath(m.name).name: m for m in members if m.isfile() and PurePosixPath(m.name).name in wanted
            }
            missing = sorted(set(wanted) - set(found))
            if missing:
                names = ", ".join(sorted(PurePosixPath(m.name).name for m in members if m.isfile())[:10])
                raise DownloadError(
                    f"{archive}: has no {', '.join(missing)} (it holds: {names})",
                    "check the model YAML's file names against the release",
                )
            target_dir = next(iter(wanted.values())).parent
            target_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target_dir))
            try:
                for name, member in found.items():
                    source = tar.extractfile(member)
                    with open(staging / name, "wb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
                placed = []
                for name, path in wanted.items():
                    os.replace(staging / name, path)
                    placed.append(path)
                return placed
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(
            f"{archive}: the archive is corrupt ({exc})", "delete it and run the command again"
        ) from None


# -- a whole model ------------------------------------------------------------------------------------
def _archives(spec: ModelSpec) -> dict[str, dict[str, Path]]:
    """{archive URL: {file name inside: destination}} for the iCD files that are missing."""
    plan: dict[str, dict[str, Path]] = {}
    for path, key in ((spec.teacher, "teacher"), (spec.forward_lora, "loras"), (spec.reverse_lora, "loras")):
        if path.is_file():
            continue
        url = spec.sources.get(key)
        if not url:
            raise DownloadError(
                f"model {spec.name!r} names no download address for {path.name}",
                f"put the file at {path} yourself, or add sources.{key} to {spec.path}",
            )
        check_address(url, f"{spec.path or spec.name}: sources.{key}")
        plan.setdefault(url, {})[path.name] = path
    return plan


def offline() -> bool:
    """HF_HUB_OFFLINE=1 means offline for every download, the hub's and the release's."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def download_icd_files(spec: ModelSpec, progress: Progress | None = None) -> list[Path]:
    plan = _archives(spec)
    if plan and offline():
        missing = ", ".join(str(path) for wanted in plan.values() for path in wanted.values())
        raise DownloadError(
            f"HF_HUB_OFFLINE is set: cannot fetch the missing files {missing}",
            f"run `{download_command(spec)}` on a machine with network, or copy the files there",
        )
    placed: list[Path] = []
    downloads = weights_home() / ".downloads"
    for url, wanted in plan.items():
        archive = downloads / PurePosixPath(urllib.request.urlparse(url).path).name
        fetch(url, archive, sha256=spec.sources.get(f"{archive.name}_sha256"), progress=progress)
        try:
            placed += unpack(archive, wanted)
        finally:
            archive.unlink(missing_ok=True)  # unpacked, or corrupt or foreign: never reused either way
    return placed


def download_base(spec: ModelSpec, dtype: str = "fp32") -> Path:
    """Fetch only the base files icdedit reads (fp16 weights when the model will run in fp16)."""
    if spec.base_is_local:
        if base_files_present(Path(spec.base), spec.family):
            return Path(spec.base)
        raise DownloadError(f"base folder {spec.base} is incomplete", "point base at a complete diffusers folder")
    if offline():
        raise DownloadError(
            f"HF_HUB_OFFLINE is set: cannot fetch the base model {spec.base!r}",
            "unset HF_HUB_OFFLINE on a machine with network, or set base to a local folder",
        )
    from huggingface_hub import snapshot_download

    variant = "fp16" if dtype in ("fp16", "auto-fp16") else "fp32"
    try:
        return Path(
            snapshot_download(spec.base, allow_patterns=[*spec.traits.base_files, *spec.traits.base_weights[variant]])
        )
    except Exception as exc:  # noqa: BLE001 - the hub client raises many kinds; all mean "not fetched"
        raise DownloadError(
            f"base model {spec.base!r} could not be fetched from the hub ({first_line(exc)[:200]})",
            "check the network (HF_ENDPOINT, HF_TOKEN), or set base to a local folder",
        ) from None
