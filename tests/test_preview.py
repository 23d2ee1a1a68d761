"""`--preview`: TAESD decodes the UNet's latents in place of the VAE's decoder, and says so.

The reference is diffusers' own `AutoencoderTiny.decode` on the saved folder, not icdedit's
loading of it; the decoder is a tiny random one in the hub's layout (`tiny.build_tiny_preview_decoder`).
"""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from PIL import Image

from icdedit.editor import Editor
from icdedit.images import from_model_output, resize
from icdedit.latents import load_latent
from icdedit.preview import PREVIEW_DECODERS, decoder_for, load_preview_decoder
from icdedit.tiny import build_tiny_preview_decoder

from .helpers import assert_clean_error, make_photo, run

SOURCE, TARGET = "a photo of a cat", "a photo of a dog"


@pytest.fixture
def preview_home(tmp_path, monkeypatch):
    """A weights folder holding the SD1.5 preview decoder (a tiny random TAESD)."""
    home = tmp_path / "home"
    monkeypatch.setenv("ICDEDIT_HOME", str(home))
    build_tiny_preview_decoder(PREVIEW_DECODERS["taesd"].folder)
    return home


def taesd_reference(latents: torch.Tensor) -> list[Image.Image]:
    """diffusers' pipelines decode with AutoencoderTiny as `decode(latents / scaling_factor)`,
    and its scaling factor is 1: the UNet's latents as they are."""
    model = AutoencoderTiny.from_pretrained(PREVIEW_DECODERS["taesd"].folder).eval()
    with torch.no_grad():
        return from_model_output(model.decode(latents / model.config.scaling_factor).sample)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_editor_decodes_with_the_preview_decoder(preview_home, editor):
    z = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    decoder = load_preview_decoder(decoder_for("sd15"), torch.device("cpu"), torch.float32)
    previewing = Editor(editor.bundle, preview_decoder=decoder)
    got, expected = previewing.decode_latents(z), taesd_reference(z)
    assert [i.size for i in got] == [(96, 64)] * 2
    # exact: the same modules run on the same input (the decoder alone, as `decode` runs it)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(got, expected))
    assert not np.array_equal(pixels(got[0]), pixels(editor.decode_latents(z)[0]))  # not the VAE's


def test_edit_preview_decodes_the_edits_latents_and_says_it_is_approximate(preview_home, tiny_model, photo_path):
    flags = ["--src", SOURCE, "--tgt", TARGET, "-m", tiny_model, "--device", "cpu", "--json"]
    result = run(
        "edit",
        photo_path,
        *flags,
        "-o",
        photo_path.with_name("p.png"),
        "--preview",
        "--save-latent",
        photo_path.with_name("rows.safetensors"),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["decoder"] == "taesd (approximate preview)" and "fast but approximate" in result.stderr
    rows = load_latent(photo_path.with_name("rows.safetensors")).latent
    (expected,) = taesd_reference(rows[1:])
    got = Image.open(photo_path.with_name("p.png"))
    # at the photo's size like every edit; 8-bit pixels of two float32 runs: at most one level apart
    assert np.abs(pixels(got) - pixels(resize(expected, got.size))).max() <= 1
    plain = run("edit", photo_path, *flags, "-o", photo_path.with_name("full.png"))
    assert "decoder" not in json.loads(plain.stdout)
    assert not np.array_equal(pixels(got), pixels(Image.open(photo_path.with_name("full.png"))))


def test_generate_preview_records_the_decoder_and_a_preview_run_is_not_resumed_as_a_full_one(
    preview_home, tiny_model, tmp_path
):
    made = run("generate", SOURCE, "-m", tiny_model, "-o", tmp_path / "g.png", "--preview", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["decoder"] == "taesd (approximate preview)"
    assert json.loads(Image.open(tmp_path / "g.png").text["icdedit"])["decoder"] == "taesd (approximate preview)"
    (tmp_path / "prompts.txt").write_text(f"{SOURCE}\n")
    args = ["generate", "--prompts", tmp_path / "prompts.txt", "-m", tiny_model, "--out", tmp_path / "out", "--json"]
    assert json.loads(run(*args).stdout)["done"] == [1]
    full = tmp_path / "out" / "00001-a-photo-of-a-cat.png"
    stamp = full.stat().st_mtime_ns
    assert json.loads(run(*args, "--preview").stdout)["done"] == [1]  # made, not skipped as the full one
    preview = tmp_path / "out" / "00001-a-photo-of-a-cat-preview.png"
    assert preview.is_file() and full.stat().st_mtime_ns == stamp  # beside the full image, not over it
    assert json.loads(Image.open(preview).text["icdedit"])["decoder"] == "taesd (approximate preview)"
    assert json.loads(run(*args, "--preview").stdout)["skipped"] == [1]


def test_a_missing_preview_decoder_is_one_clear_error_before_loading(tmp_path, monkeypatch, tiny_model, photo_path):
    from icdedit import run_context

    monkeypatch.setenv("ICDEDIT_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(run_context, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for command in (["edit", photo_path, "--src", SOURCE, "--tgt", TARGET], ["generate", SOURCE]):
        result = run(*command, "-m", tiny_model, "--preview")
        assert_clean_error(result, "preview decoder 'taesd'", "icdedit download taesd")


def test_a_broken_preview_decoder_folder_is_one_clear_error(preview_home, tiny_model, photo_path):
    weights = PREVIEW_DECODERS["taesd"].folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a cut-off download
    result = run("edit", photo_path, "--src", SOURCE, "--tgt", TARGET, "-m", tiny_model, "--preview")
    # found when loading, like any broken weights file: after the notes, as the one error line
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "does not load" in error[0] and "icdedit download taesd" in error[0]


def test_models_lists_the_preview_decoders_and_download_names_them(preview_home, monkeypatch):
    listing = {m["model"]: m for m in json.loads(run("models", "--json").stdout)["models"] if m["kind"] == "preview"}
    assert listing["taesd"]["ready"] and listing["taesd"]["family"] == "sd15"
    assert not listing["taesdxl"]["ready"] and listing["taesdxl"]["download_command"] == "icdedit download taesdxl"
    assert "taesd (sd15): on disk" in run("models").stdout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_clean_error(run("download", "taesdxl"), "HF_HUB_OFFLINE is set", "preview decoder 'taesdxl'")


def test_grid_cells_say_they_are_previews(preview_home, tiny_model, photo_path):
    out = photo_path.with_name("g.png")
    args = ["edit", photo_path, "--src", SOURCE, "--tgt", TARGET, "-m", tiny_model, "-o", out]
    result = run(*args, "--grid", "guidance=10,15", "--preview", "--score", "psnr", "--json")
    assert result.exit_code == 0, result.output
    assert "scored on approximate images" in result.stderr
    report = json.loads(result.stdout)
    assert report["decoder"] == "taesd (approximate preview)"
    for cell in report["grid"]:
        assert json.loads(Image.open(cell["output"]).text["icdedit"])["decoder"] == "taesd (approximate preview)"


def test_the_pages_command_carries_preview_and_gives_its_image(preview_home, editor, tiny_model, tmp_path, monkeypatch):
    from icdedit.ui import PageEdit, UiSession

    decoder = load_preview_decoder(decoder_for("sd15"), torch.device("cpu"), torch.float32)
    session = UiSession(Editor(editor.bundle, preview_decoder=decoder), tmp_path / "ui", model=str(tiny_model))
    result = session.edit(PageEdit(make_photo(96, 64), SOURCE, (TARGET,)))
    args = shlex.split(result.command)
    assert "--preview" in args
    monkeypatch.chdir(tmp_path)
    cli = run(*args[1:], "-o", "cli.png")
    assert cli.exit_code == 0, cli.output
    assert np.array_equal(np.asarray(Image.open("cli.png")), np.asarray(result.images[0]))


def test_download_fetches_the_decoders_config_and_weights_only(tmp_path, monkeypatch):
    import huggingface_hub

    asked = []

    def fake_snapshot(repo_id, allow_patterns, local_dir, **_):  # the hub, as far as this download sees it
        asked.append((repo_id, list(allow_patterns)))
        build_tiny_preview_decoder(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("ICDEDIT_HOME", str(tmp_path / "home"))
    result = run("download", "taesdxl", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["placed"] == [str(PREVIEW_DECODERS["taesdxl"].folder)]
    assert asked == [("madebyollin/taesdxl", ["config.json", "diffusion_pytorch_model.safetensors"])]
    assert PREVIEW_DECODERS["taesdxl"].present and not PREVIEW_DECODERS["taesd"].present


def test_a_family_without_a_preview_decoder_refuses_preview_cleanly_and_needs_no_other_name(
    tmp_path, monkeypatch, photo_path
):
    """A third family, registered here alone through the public constructor: `--preview` is one
    error line naming it and the fix, and everything else (building, loading, editing) asks the
    family's traits, so nothing outside families.py has to name it."""
    from dataclasses import replace

    from icdedit.errors import ModelError
    from icdedit.families import FAMILIES
    from icdedit.specs import load_spec
    from icdedit.tiny import build_tiny_model

    third = replace(FAMILIES["sd15"], name="third", label="Third", tiny_model="tiny-third", preview_decoder=None)
    monkeypatch.setitem(FAMILIES, "third", third)
    monkeypatch.setenv("ICDEDIT_HOME", str(tmp_path / "home"))
    model = build_tiny_model(tmp_path / "third", family="third")
    spec = load_spec(model)
    assert spec.traits is third
    with pytest.raises(ModelError, match=r"--preview: model 'tiny-third' \(Third\) has no preview decoder"):
        decoder_for(spec)
    assert all("third" not in decoder.families for decoder in PREVIEW_DECODERS.values())

    flags = ["--src", SOURCE, "--tgt", TARGET, "-m", model, "--device", "cpu"]
    refused = run("edit", photo_path, *flags, "-o", tmp_path / "p.png", "--preview")
    assert_clean_error(refused, "--preview", "Third", "no preview decoder", "leave out --preview")
    edited = run("edit", photo_path, *flags, "-o", tmp_path / "e.png", "--json")
    assert edited.exit_code == 0, edited.output
    assert json.loads(edited.stdout)["settings"]["method"] == "p2p"  # the family's own default
