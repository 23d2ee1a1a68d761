"""Image I/O: any common file and mode in, RGB uint8 at the model's resolution, and back."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .errors import InputError, UsageError
from .files import check_name, write_atomically

if TYPE_CHECKING:
    from .specs import ModelSpec

SIZE_MULTIPLE = 64  # latent sides stay divisible by 8 after the VAE's 8x and the UNet's 3 halvings


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: transparency over white, 16-bit and float scaled, palettes expanded."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB with its EXIF orientation applied; bad files raise InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"image not found: {path}", "check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image", "give an image file (use `icdedit batch` for folders)")
    check_regular_file(path, "image")
    try:
        with warnings.catch_warnings():  # between 1x and 2x Pillow's limit: a large photo, decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{path}: {_megapixels(exc)} is over the {max_pixels() / 1e6:.0f}-megapixel limit "
            "for decoding (a guard against decompression bombs)",
            "downscale it first; icdedit processes photos at 512 or 1024 px anyway",
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image PIL can read", "use JPEG, PNG, WebP, BMP or TIFF") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: the image file is damaged ({exc})", "re-export or re-download it") from None


def check_regular_file(path: Path, what: str) -> Path:
    """Only regular files are opened: reading a FIFO (or a device) would wait forever."""
    if not Path(path).is_file():
        raise InputError(
            f"{path} is not a regular file (a FIFO, device or socket), so it is not read as an {what}",
            f"save the {what} to a file first and give that file",
        )
    return Path(path)


MAX_SIZE = 4096  # the VAE tiles above twice the model's resolution, but a UNet pass grows with the area


def check_size(size: int | None, option: str = "--size") -> int | None:
    """A size in pixels: a multiple of 64 from 64 to MAX_SIZE (None: the model's own resolution)."""
    if size is not None and (size % SIZE_MULTIPLE or not SIZE_MULTIPLE <= size <= MAX_SIZE):
        raise UsageError(
            f"{option} {size} is not a multiple of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {MAX_SIZE}",
            f"e.g. {option} 512, or leave it out for the model's resolution",
        )
    return size


def max_pixels() -> int:
    """The decompression-bomb limit: the most pixels a photo may have to be decoded at all."""
    return 2 * Image.MAX_IMAGE_PIXELS


def check_recorded_size(size: tuple[int, int], path: Path, key: str, processed: bool) -> tuple[int, int]:
    """A size written in a file meets the limits a photo or --size meets: a processing size is at
    most MAX_SIZE x MAX_SIZE pixels (a side at most twice that: SDXL's widest buckets), a photo's
    size is within the decompression-bomb limit. Checked before any model loads."""
    width, height = size
    if processed:
        too_big = width * height > MAX_SIZE * MAX_SIZE or max(width, height) > 2 * MAX_SIZE
        limit = f"{MAX_SIZE}x{MAX_SIZE} pixels (a side at most {2 * MAX_SIZE})"
    else:
        too_big = width * height > max_pixels()
        limit = f"the {max_pixels() / 1e6:.0f}-megapixel limit for photos"
    if too_big:
        raise InputError(
            f"{path}: {key} {width}x{height} is over {limit}",
            "use a latent file written by `icdedit invert` at a size up to --size " + str(MAX_SIZE),
        )
    return size


def _megapixels(error: Exception) -> str:
    """The size Pillow refused, from its message ('Image size (N pixels) exceeds ...')."""
    match = re.search(r"\((\d+) pixels\)", str(error))
    return f"{int(match[1]) / 1e6:,.0f} megapixels" if match else "its size"


def plan_size(width: int, height: int, size: int, by_area: bool = False) -> tuple[int, int]:
    """Processing size, aspect ratio kept, both sides multiples of 64: the long side `size`, or
    with `by_area` about size x size pixels in all (SDXL's ~1 megapixel buckets: a 4:3 photo at
    1024 is processed at 1152 x 896), the long side at most 2 x size (SDXL's widest buckets are
    4:1; a panorama is processed smaller rather than as a 64-pixel strip of huge length)."""
    if size % SIZE_MULTIPLE or size <= 0:
        raise InputError(f"size {size} is not a positive multiple of {SIZE_MULTIPLE}", "use e.g. --size 512")
    scale = size / max(width, height)
    if by_area:
        scale = min(size / (width * height) ** 0.5, 2 * scale)

    def snap(side: float) -> int:
        return max(SIZE_MULTIPLE, int(round(side * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE)

    return snap(width), snap(height)


def processing_size(spec: ModelSpec, image_size: tuple[int, int], size: int | None = None) -> tuple[int, int]:
    """The size rule, the one place it is applied: the (width, height) a photo of `image_size` is
    processed at by `spec`'s model. `size` (None: the model's resolution) is the long side, or
    where the family's `size_by_area` says so (SDXL) the side of a square of the same area."""
    return plan_size(*image_size, size or spec.resolution, by_area=spec.traits.size_by_area)


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resample only when the size changes, so a 512x512 input is processed untouched."""
    return image if image.size == tuple(size) else image.resize(size, Image.Resampling.LANCZOS)


def to_model_input(image: Image.Image, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RGB uint8 -> (1, 3, H, W) in [-1, 1]: x = img / 127.5 - 1 (docs/numerics.md section 4), computed
    in float32 as released (in float64 for a float64 model)."""
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return (array.to(dtype) / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0)


def from_model_output(x: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> RGB images, rounded to nearest (the official code truncates)."""
    pixels = ((x.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [Image.fromarray(p.permute(1, 2, 0).cpu().numpy(), "RGB") for p in pixels]


_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def image_format(path: Path) -> str:
    check_name(path)  # a NUL byte would fail in the writer, after the edit was computed
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot tell the image format of {path}", f"end the file name in one of {', '.join(_FORMATS)}"
        )
    return fmt


EXIF_IMAGE_DESCRIPTION = 0x010E
EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286
USER_COMMENT_UNICODE = b"UNICODE\x00"  # the EXIF character code A1111's readers decode (UTF-16BE after it)


def user_comment(text: str) -> bytes:
    """EXIF UserComment as Automatic1111 writes its `parameters` into JPEG and WebP."""
    return USER_COMMENT_UNICODE + text.encode("utf-16-be")


def read_user_comment(data) -> str | None:
    """The text of an EXIF UserComment (UNICODE or ASCII character code), None if there is none."""
    if not isinstance(data, bytes) or len(data) < 8:
        return None
    code, body = data[:8], data[8:]
    if code == USER_COMMENT_UNICODE:
        return body.decode("utf-16-be", "replace")
    return body.decode("utf-8", "replace").rstrip("\x00")


def _exif(text: dict[str, str]) -> Image.Exif:
    """The texts as JSON in ImageDescription; `parameters` (A1111's) also as the UserComment."""
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = json.dumps(text)
    if "parameters" in text:
        exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = user_comment(text["parameters"])
    return exif


def save_image(image: Image.Image, path: Path, text: dict[str, str] | None = None) -> Path:
    """Write atomically; `text` goes into the file where the format has a place for it: PNG text
    chunks; JPEG its comment, WebP and TIFF the EXIF/TIFF ImageDescription, each holding it as
    JSON; a `parameters` text (Automatic1111's) also as JPEG's and WebP's EXIF UserComment, where
    PNG-info readers look. (BMP has no such place.)"""
    fmt = image_format(path)
    options: dict = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if text and fmt == "PNG":
        info = PngInfo()
        for key, value in text.items():
            info.add_itxt(key, value)
        options["pnginfo"] = info
    elif text and fmt == "JPEG":
        options["comment"] = json.dumps(text)
        options["exif"] = _exif(text).tobytes()
    elif text and fmt == "WEBP":
        options["exif"] = _exif(text).tobytes()
    elif text and fmt == "TIFF":
        options["tiffinfo"] = {EXIF_IMAGE_DESCRIPTION: json.dumps(text)}
    return write_atomically(path, lambda tmp: image.save(tmp, format=fmt, **options))


@dataclass(frozen=True)
class PreparedImage:
    """An input photo and the size it is processed at."""

    original: Image.Image
    processed: Image.Image

    @property
    def original_size(self) -> tuple[int, int]:
        return self.original.size

    @property
    def processed_size(self) -> tuple[int, int]:
        return self.processed.size


def prepare_image(image: Image.Image, processed_size: tuple[int, int]) -> PreparedImage:
    """The photo and its resampling to `processed_size` (`processing_size` chooses it)."""
    return PreparedImage(image, resize(image, processed_size))


CAPTION_SIZE = 14  # Pillow's default font at this size: no font file needed
ELLIPSIS = "..."  # plain dots: the default font may lack the one-character ellipsis


def _font():
    from PIL import ImageFont

    return ImageFont.load_default(size=CAPTION_SIZE)


def shorten(text: str, width: float, font=None) -> str:
    """`text` within `width` pixels in the caption font: a longer one is cut at the end and
    marked with an ellipsis (a caption names a prompt, whose beginning says most)."""
    from PIL import ImageDraw

    font = font or _font()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if draw.textlength(text, font=font) <= width:
        return text
    low, high = 0, len(text)  # the longest prefix that fits with the ellipsis
    while low < high:
        middle = (low + high + 1) // 2
        if draw.textlength(text[:middle].rstrip() + ELLIPSIS, font=font) <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + ELLIPSIS


def caption_height(pad: int = 6) -> int:
    return CAPTION_SIZE + 2 * pad


def side_by_side(images: list[Image.Image], labels: list[str] | None = None, gap: int = 8) -> Image.Image:
    """The images in a row, `gap` pixels apart; with `labels`, each panel's label under it
    (shortened to the panel's width with an ellipsis)."""
    from PIL import ImageDraw

    pad = 6
    height = max(i.height for i in images)
    strip = caption_height(pad) if labels else 0
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height + strip), (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), _font()
    x = 0
    for n, image in enumerate(images):
        canvas.paste(image, (x, 0))
        if labels:
            draw.text((x + 2, height + pad), shorten(labels[n], image.width - 4, font), fill=(0, 0, 0), font=font)
        x += image.width + gap
    return canvas


def contact_sheet(
    images: list[Image.Image],
    columns: list[str],
    rows: list[str],
    tile: int = 384,
    pad: int = 6,
    original: Image.Image | None = None,
    prompts: list[str] = (),
) -> Image.Image:
    """Images in a labelled grid, row-major: `columns` label the columns (top), `rows` the rows
    (left). Tiles are scaled to fit `tile` pixels on their long side. Above the grid, when
    given: `prompts` (one line each, e.g. 'source: ...', shortened to the sheet's width) and the
    `original` photo as a first row labelled 'original'."""
    from PIL import ImageDraw

    font = _font()
    thumbs = [image.copy() for image in [*images, *([original] if original is not None else [])]]
    for thumb in thumbs:
        thumb.thumbnail((tile, tile), Image.Resampling.LANCZOS)
    first = thumbs.pop() if original is not None else None
    row_labels = ["original", *rows] if first is not None else rows
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [t.width for t in [*thumbs, *([first] if first is not None else [])]]
    cell_w = max(widths + [int(draw.textlength(text, font=font)) + pad for text in columns])
    cell_h = max(t.height for t in thumbs)
    label_w = max([int(draw.textlength(text, font=font)) for text in row_labels] + [0]) + 2 * pad
    label_h = caption_height(pad)
    top = len(prompts) * label_h + (first.height + pad if first is not None else 0)
    width = label_w + len(columns) * (cell_w + pad)
    sheet = Image.new("RGB", (width, top + label_h + len(rows) * (cell_h + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, text in enumerate(prompts):
        draw.text((pad, n * label_h + pad), shorten(text, width - 2 * pad, font), fill=(0, 0, 0), font=font)
    if first is not None:
        y = len(prompts) * label_h
        sheet.paste(first, (label_w, y))
        draw.text((pad, y + first.height // 2), "original", fill=(0, 0, 0), font=font)
    for c, text in enumerate(columns):
        draw.text((label_w + c * (cell_w + pad), top + pad), text, fill=(0, 0, 0), font=font)
    for r, text in enumerate(rows):
        draw.text((pad, top + label_h + r * (cell_h + pad) + cell_h // 2), text, fill=(0, 0, 0), font=font)
    for i, thumb in enumerate(thumbs):
        r, c = divmod(i, len(columns))
        sheet.paste(thumb, (label_w + c * (cell_w + pad), top + label_h + r * (cell_h + pad)))
    return sheet
