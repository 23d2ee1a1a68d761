"""What the test modules share, so that no test module imports another.

- The CLI, through its public entry point only (`icdedit.cli.app`): `run` (Typer's runner,
  stdout and stderr apart), argument builders for the common command lines on the tiny models
  (`tiny_args`, `invert_args`, `edit_args`, `batch_args`, `generate_args`), and the checks every
  command's output must pass: `assert_clean_error` (exit code, one `error: ...` line on stderr,
  no traceback, nothing written) and `one_json_object` (`--json`: one object on stdout).
- Inputs: `make_photo` (a synthetic photo), `in_float64` (an inversion for a float64 editor).
- Prompt-to-Prompt pieces used by the SD1.5 and SDXL equivalence tests alike: `plan_for`
  (icdedit's control plan of an edit), `probe` (one cross layer of icdedit's controller on
  synthetic inputs) and `official_controller` (the official-style controller, built by
  tests/official_plan.py and tests/reference.py from the prompts and the edit's words).
  `P2P_SIZE` and `XL_SOURCE`: the size and the SDXL source prompt of the photo they edit.

Fixtures live in conftest.py; the independent reference in reference.py and official_plan.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from . import reference
from .official_plan import official_plan

runner = CliRunner()

# The photo both families' Prompt-to-Prompt tests edit (`inversion` in test_p2p.py, `xl_inversion`):
# 256 px, a 32x32 latent whose local-blend level is 8x8, so blend masks can cover part of it.
P2P_SIZE = 256
XL_SOURCE = "a photo of a cat sitting on the grass"  # the SDXL tests' source prompt


# -- the CLI ----------------------------------------------------------------------------------------
def run(*args, input: str | None = None) -> Result:
    """One CLI call through Typer's runner; `result.stdout` and `result.stderr` are apart."""
    from icdedit.cli import app

    return runner.invoke(app, [*map(str, args)], input=input)


def tiny_args(model: str = "tiny", *, size: int | None = None, device: str = "cpu") -> list[str]:
    """The common tail of a command line on a tiny model: `--model tiny --device cpu [--size N]`."""
    return ["--model", str(model), "--device", device, *(["--size", str(size)] if size is not None else [])]


def invert_args(photo, prompt: str, output=None, *, model: str = "tiny", size: int | None = 64, extra=()) -> list[str]:
    """`invert PHOTO --prompt PROMPT [-o OUTPUT]` on a tiny model."""
    out = ["-o", str(output)] if output is not None else []
    return ["invert", str(photo), "--prompt", prompt, *out, *tiny_args(model, size=size), *map(str, extra)]


def edit_args(
    source, src: str | None, targets: str | Sequence[str], output=None, *, model="tiny", size=64, extra=()
) -> list[str]:
    """`edit SOURCE [--src SRC] --tgt T... [-o OUTPUT]` on a tiny model (SOURCE: a photo or a latent
    file; a latent file carries its own source prompt, so `src` may be None)."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    args = ["edit", str(source), *(["--src", src] if src is not None else [])]
    for target in targets:
        args += ["--tgt", target]
    out = ["-o", str(output)] if output is not None else []
    return [*args, *out, *tiny_args(model, size=size), *map(str, extra)]


def batch_args(inputs: Iterable, out, *, model: str = "tiny", size: int | None = 64, extra=()) -> list[str]:
    """`batch INPUTS... --out FOLDER` on a tiny model (prompts go in `extra` or the manifest)."""
    return ["batch", *map(str, inputs), "--out", str(out), *tiny_args(model, size=size), *map(str, extra)]


def generate_args(prompt: str | None = None, *, model: str = "tiny", width: int = 64, extra=()) -> list[str]:
    """`generate [PROMPT] --width W` on a tiny model (a prompt file goes in `extra`: --prompts)."""
    return [
        "generate",
        *([prompt] if prompt is not None else []),
        "--width",
        str(width),
        *tiny_args(model),
        *map(str, extra),
    ]


def assert_clean_error(result, *fragments, folder=None, before=None, code=1, hint=False):
    """One line on stderr naming what is wrong, exit `code` (2: a usage error), no traceback,
    and (with `folder`) nothing written there: its sorted file names are still `before`. With
    `hint`, the line ends with `(hint: ...)`, as every IcdEditError's line with a hint does."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    if hint:
        assert " (hint: " in lines[0] and lines[0].endswith(")"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    if folder is not None:
        assert sorted(p.name for p in Path(folder).iterdir()) == before


def one_json_object(result, keys: Iterable[str] = ()) -> dict:
    """`--json`: exit 0 and exactly one JSON object on stdout (one line), holding `keys`."""
    assert result.exit_code == 0, (result.exit_code, result.output)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    report = json.loads(lines[0])
    assert isinstance(report, dict), report
    missing = set(keys) - set(report)
    assert not missing, (missing, sorted(report))
    return report


# -- inputs -----------------------------------------------------------------------------------------
def make_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth synthetic photo: gradients plus a bright disc, so the VAE sees structure."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), 0.5 + 0.5 * np.sin(x / 7.0)], -1)
    disc = ((x - width * 0.6) ** 2 + (y - height * 0.4) ** 2) < (min(width, height) * 0.25) ** 2
    r[disc] = [0.9, 0.8, 0.2]
    r += rng.normal(0, 0.02, r.shape)
    return Image.fromarray((np.clip(r, 0, 1) * 255).astype(np.uint8), "RGB")


def in_float64(inversion):
    """An inversion's latent in float64, for a float64 editor to decode."""
    from dataclasses import replace

    return replace(inversion, latent=inversion.latent.double())


# -- Prompt-to-Prompt: icdedit's plan, a probe of its controller, the official-style controller ------
def plan_for(editor, source, targets, settings, **words):
    """icdedit's edit words and control plan for an edit (what `prepare_edit` derives)."""
    from icdedit.p2p.plan import build_control_plan, derive_all_edit_words

    w = derive_all_edit_words(source, targets, settings.mode, settings.amplify, **words)
    plan = build_control_plan(
        editor.tokenizer,
        source,
        targets,
        w,
        num_steps=editor.bundle.plan.num_reverse_steps,
        cross_replace=settings.cross_replace,
        self_replace=settings.self_replace,
        blend_threshold=settings.blend_threshold,
    )
    return w, plan


def probe(editor, source, target, settings, amplify, step):
    """Run one cross layer of the controller on synthetic q, k and identity values, so the
    output *is* the attention probabilities."""
    from icdedit.p2p.control import AttentionController, LayerInfo

    _, plan = plan_for(editor, source, [target], settings, amplify=amplify)
    controller = AttentionController(plan, (8, 8), torch.device("cpu"), torch.float32)
    controller.begin_step(step)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 64, 8, generator=g)
    k = torch.randn(1, 2, 77, 8, generator=g).expand(2, -1, -1, -1)  # same prompt: same keys
    v = torch.eye(77).expand(2, 2, 77, 77)
    out = controller.attend(LayerInfo("x", "down", True), q, k, v, 8**-0.5)
    own = torch.softmax(q @ k.transpose(-1, -2) * 8**-0.5, -1)
    return out, own


def official_controller(tokenizer, source, targets, settings, words, latent_size, **options):
    """The official-style controller of an edit. `words` are the edit's request (which words to
    amplify and blend, as icdedit derived or was given them); everything computed from them
    (token positions, mappers, windows, blend rows) comes from tests/official_plan.py. `options`
    go to OfficialStyleController (offset, blend_maps)."""
    h, w = latent_size
    amplify = list(dict.fromkeys(pair for word in words for pair in word.amplify))
    blend = (
        list(dict.fromkeys(x for word in words for x in word.blend_source)),
        list(dict.fromkeys(x for word in words for x in word.blend_target)),
    )
    plan = official_plan(
        tokenizer,
        source,
        list(targets),
        num_steps=4,
        cross_replace=settings.cross_replace,
        self_replace=settings.self_replace,
        amplify=amplify,
        blend=blend if blend[1] else None,
        mode=None if settings.mode == "auto" else settings.mode,
    )
    return reference.OfficialStyleController(
        mappers=plan.mappers,
        equalizers=plan.equalizers,
        cross_alpha=plan.cross_alpha,
        self_steps=plan.self_steps,
        self_limit=(h // 2) * (w // 2),
        blend_words=plan.blend_words,
        blend_hw=(h // 4, w // 4),
        threshold=settings.blend_threshold,
        **options,
    )
