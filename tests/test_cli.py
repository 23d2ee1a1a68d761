"""Every command and every bad input, through the CLI runner, on the tiny model."""

import errno
import gzip
import json
import os
import shlex
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from icdedit.errors import IcdEditError
from icdedit.latents import load_latent, save_latent

from .helpers import assert_clean_error, make_photo, run
from .tolerance import Float32Error, assert_near_exact


@pytest.fixture
def work(tmp_path, monkeypatch, tiny_model):
    """A clean working folder with a photo, and the tiny model's YAML."""
    monkeypatch.chdir(tmp_path)
    make_photo(96, 64).save(tmp_path / "photo.png")
    return tmp_path, str(tiny_model)


# -- help --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        [],
        ["invert"],
        ["reconstruct"],
        ["edit"],
        ["presets"],
        ["batch"],
        ["models"],
        ["download"],
        ["generate"],
        ["eval"],
    ],
)
def test_help_shows_an_example(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Example" in result.stdout


@pytest.mark.parametrize("command", [[], ["invert"], ["reconstruct"], ["edit"]])
def test_help_examples_work(work, command):
    folder, model = work
    text = run(*command, "--help").stdout
    example = next(line.strip() for line in text.splitlines() if line.strip().startswith("icdedit "))
    args = shlex.split(example)[1:]
    args = ["photo.png" if a in ("photo.jpg", "pug.jpg", "examples/chelsea.jpg") else a for a in args]
    result = run(*args, "--model", model, "--device", "cpu")
    assert result.exit_code == 0, (example, result.output)


def test_version():
    assert run("--version").stdout.startswith("icdedit ")


def test_usage_errors_exit_2(work):
    assert run("edit", "photo.png", "--src", "a cat").exit_code == 2  # --tgt missing
    assert run("frobnicate").exit_code == 2


# -- invert and reconstruct ---------------------------------------------------------------------------
def test_invert_writes_latent_and_metadata(work, editor, editor64):
    folder, model = work
    result = run(
        "invert",
        "photo.png",
        "--prompt",
        "a photo of a cat",
        "--model",
        model,
        "--seed",
        "5",
        "--device",
        "cpu",
        "-o",
        "cat.safetensors",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["output"] == "cat.safetensors" and report["latent_shape"] == [1, 4, 8, 8]
    assert report["original_size"] == [96, 64] and report["processed_size"] == [64, 64]
    latent = load_latent(folder / "cat.safetensors")
    photo = Image.open(folder / "photo.png").convert("RGB")
    exact = editor64.invert(photo, "a photo of a cat", seed=5).latent
    error = Float32Error.measure(editor.invert(photo, "a photo of a cat", seed=5).latent, exact)
    assert_near_exact(latent.latent, exact, error, "latent")
    assert latent.metadata["prompt"] == "a photo of a cat" and latent.metadata["original_size"] == "96x64"
    assert latent.metadata["icdedit_version"] and latent.metadata["reverse_timesteps"] == "259,519,779,999"


def test_reconstruct_prints_psnr_and_ssim_and_keeps_the_size(work):
    folder, model = work
    result = run("reconstruct", "photo.png", "--prompt", "a photo", "--model", model, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.stdout and "SSIM" in result.stdout
    assert Image.open(folder / "photo-reconstruction.png").size == (96, 64)


def test_reconstruct_from_a_latent_file_uses_its_prompt_and_model(work):
    folder, model = work
    assert run("invert", "photo.png", "-p", "a photo of a dog", "-m", model, "--device", "cpu").exit_code == 0
    result = run("reconstruct", "photo.safetensors", "--device", "cpu", "--json")  # no --model, no --prompt
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["prompt"] == "a photo of a dog" and "psnr" not in report
    image_rec = run("reconstruct", "photo.png", "-p", "a photo of a dog", "-m", model, "--device", "cpu", "-o", "b.png")
    assert image_rec.exit_code == 0
    assert np.array_equal(np.asarray(Image.open(report["output"])), np.asarray(Image.open(folder / "b.png")))


# -- edit ------------------------------------------------------------------------------------------------
def test_edit_writes_image_side_by_side_and_latents(work):
    folder, model = work
    result = run(
        "edit",
        "photo.png",
        "--src",
        "a photo of a cat",
        "--tgt",
        "a photo of a dog",
        "-m",
        model,
        "--device",
        "cpu",
        "--side-by-side",
        "--save-latent",
        "final.safetensors",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["outputs"] == ["photo-a-photo-of-a-dog.png"]
    assert report["words"][0] == {
        "mode": "replace",
        "amplify": {"dog": 4.0},
        "blend": [["cat"], ["dog"]],
        "derived": True,
    }
    assert report["settings"]["guidance"] == 19.0
    assert Image.open(folder / "photo-a-photo-of-a-dog.png").size == (96, 64)
    assert Image.open(folder / report["side_by_side"]).size == (96 * 2 + 8, 64)
    with safe_open(str(folder / "final.safetensors"), "pt") as f:
        assert f.get_tensor("latent").shape == (2, 4, 8, 8)


def test_edit_prints_what_it_derived(work):
    folder, model = work
    result = run(
        "edit",
        "photo.png",
        "--src",
        "a photo of a cat",
        "--tgt",
        "a red photo of a cat",
        "-m",
        model,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "derived for 'a red photo of a cat': mode refine; amplify red=4; blend none" in result.stderr


def test_edit_several_targets_and_explicit_words(work):
    folder, model = work
    result = run(
        "edit",
        "photo.png",
        "-s",
        "a photo of a cat",
        "-t",
        "a photo of a dog",
        "-t",
        "a photo of a bear",
        "-m",
        model,
        "--device",
        "cpu",
        "-o",
        "out.png",
        "--blend",
        "cat",
        "dog bear",
        "--amplify",
        "dog=2",
        "--amplify",
        "bear=3",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["outputs"] == ["out-1-a-photo-of-a-dog.png", "out-2-a-photo-of-a-bear.png"]
    assert report["words"][0]["amplify"] == {"dog": 2.0} and report["words"][1]["amplify"] == {"bear": 3.0}
    assert report["words"][1]["blend"] == [["cat"], ["bear"]]
    assert all((folder / p).is_file() for p in report["outputs"])


def test_edit_from_a_latent_equals_edit_from_the_image(work):
    folder, model = work
    common = ["--tgt", "a photo of a dog", "-m", model, "--device", "cpu"]
    assert run("invert", "photo.png", "-p", "a photo of a cat", "-m", model, "--device", "cpu").exit_code == 0
    assert run("edit", "photo.safetensors", *common, "-o", "from-latent.png").exit_code == 0
    assert run("edit", "photo.png", "--src", "a photo of a cat", *common, "-o", "from-image.png").exit_code == 0
    a, b = (np.asarray(Image.open(folder / n)) for n in ("from-latent.png", "from-image.png"))
    assert np.array_equal(a, b)


def test_side_by_side_from_a_latent_uses_the_source_row(work):
    folder, model = work
    assert run("invert", "photo.png", "-p", "a photo of a cat", "-m", model, "--device", "cpu").exit_code == 0
    result = run(
        "edit",
        "photo.safetensors",
        "-t",
        "a photo of a dog",
        "-m",
        model,
        "--device",
        "cpu",
        "-o",
        "dog.png",
        "--side-by-side",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert Image.open(folder / json.loads(result.stdout)["side_by_side"]).size == (96 * 2 + 8, 64)


def test_default_names_never_overwrite(work):
    folder, model = work
    args = [
        "edit",
        "photo.png",
        "--src",
        "a photo of a cat",
        "--tgt",
        "a photo of a dog",
        "-m",
        model,
        "--device",
        "cpu",
    ]
    assert run(*args).exit_code == 0
    first = (folder / "photo-a-photo-of-a-dog.png").read_bytes()
    assert run(*args, "--seed", "9").exit_code == 0
    assert (folder / "photo-a-photo-of-a-dog-2.png").is_file()
    assert (folder / "photo-a-photo-of-a-dog.png").read_bytes() == first


def test_edit_with_preset_and_flag_precedence(work):
    folder, model = work
    preset = folder / "mine.yaml"
    preset.write_text("guidance: 5\ntau: 0.6\n")
    result = run(
        "edit",
        "photo.png",
        "--src",
        "a photo of a cat",
        "--tgt",
        "a photo of a dog",
        "-m",
        model,
        "--device",
        "cpu",
        "--preset",
        str(preset),
        "--tau",
        "0.9",
        "--json",
    )
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)["settings"]
    assert settings["guidance"] == 5 and settings["tau"] == 0.9 and settings["cross_replace"] == 0.3


def test_identical_prompts_warn_that_this_is_a_reconstruction(work):
    folder, model = work
    result = run(
        "edit", "photo.png", "--src", "a photo of a cat", "--tgt", "a photo of a cat", "-m", model, "--device", "cpu"
    )
    assert result.exit_code == 0 and "this is a reconstruction" in result.stderr


def test_long_prompt_is_truncated_with_a_warning(work):
    folder, model = work
    prompt = " ".join(["cat"] * 90)
    result = run("invert", "photo.png", "-p", prompt, "-m", model, "--device", "cpu")
    assert result.exit_code == 0 and "truncated" in result.stderr


def test_builtin_tiny_model_runs_through_every_command(work):
    folder, _ = work
    result = run(
        "edit",
        "photo.png",
        "--src",
        "a photo of a cat",
        "--tgt",
        "a photo of a dog",
        "--model",
        "tiny",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "random weights" in result.stderr and (folder / "photo-a-photo-of-a-dog.png").is_file()
    assert run("invert", "photo.png", "-p", "a photo of a cat", "-m", "tiny", "--device", "cpu").exit_code == 0
    assert run("reconstruct", "photo.safetensors", "--device", "cpu").exit_code == 0  # model from the file: tiny
    assert (folder / "photo-reconstruction.png").is_file()
    batch = run("batch", "photo.png", "-s", "a cat", "-t", "a dog", "-m", "tiny", "--device", "cpu", "--out", "b")
    assert batch.exit_code == 0 and len(list((folder / "b").glob("*.png"))) == 1
    download = run("download", "tiny", "--json")
    assert download.exit_code == 0 and json.loads(download.stdout)["placed"] == []


def test_presets_command(work):
    result = run("presets")
    assert result.exit_code == 0 and "faithful" in result.stdout and "19" in result.stdout
    data = json.loads(run("presets", "--json").stdout)["presets"]
    assert data["default"]["guidance"] == 19 and data["strong"]["amplify"] == 6


# -- bad input: one line, exit 1 (2 for a value the tool cannot take), nothing written ---------------------
def _truncated_jpeg(folder):
    make_photo(64, 64).save(folder / "full.jpg", quality=90)
    data = (folder / "full.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "full.jpg").unlink()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: what a decompression bomb looks like to Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def _bad_files(folder):
    """A corpus of files that are not what they claim to be, for the commands to refuse."""
    (folder / "notes.png").write_text("not an image")
    (folder / "bad.yaml").write_text("colour: red\n")
    _truncated_jpeg(folder)
    (folder / "bomb.png").write_bytes(_png_header(40000, 40000))
    (folder / "gzip.yaml").write_bytes(gzip.compress(b"guidance: 7\n"))
    (folder / "picture.yaml").write_bytes((folder / "photo.png").read_bytes())
    (folder / "empty.yaml").write_text("")
    (folder / "nan.yaml").write_text("guidance: .nan\n")
    (folder / "model.yaml").write_bytes(gzip.compress(b"base: x\n"))
    (folder / "empty.safetensors").write_bytes(b"")
    latent = torch.full((1, 4, 8, 8), float("nan"))
    save_latent(folder / "nan.safetensors", latent, {"processed_size": "64x64", "original_size": "64x64"})


BAD = [
    (["edit", "missing.png", "--src", "a cat", "--tgt", "a dog"], ["image not found", "missing.png"]),
    (["edit", ".", "--src", "a cat", "--tgt", "a dog"], ["is a folder"]),
    (["edit", "notes.png", "--src", "a cat", "--tgt", "a dog"], ["notes.png", "not an image"]),
    (["edit", "cut.jpg", "--src", "a cat", "--tgt", "a dog"], ["cut.jpg", "damaged"]),
    (["invert", "photo.png", "--prompt", " "], ["prompt is empty"]),
    (["edit", "photo.png", "--src", "", "--tgt", "a dog"], ["src is empty"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", ""], ["tgt is empty"]),
    (["reconstruct", "photo.png"], ["prompt describing photo.png"]),
    (
        ["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--blend", "pug", "dog"],
        ["'pug'", "source prompt", "'cat'"],
    ),
    (
        ["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--amplify", "bear=2"],
        ["'bear'", "target prompt", "'dog'"],
    ),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a big dog", "--mode", "replace"], ["same number of words"]),
    (
        ["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--preset", "bad.yaml"],
        ["bad.yaml", "unknown key 'colour'"],
    ),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "-o", "photo.png", "--overwrite"], ["is an input file"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "-o", "nowhere/out.png"], ["does not exist"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "-o", "out.gif"], ["image format"]),
    (["invert", "photo.png", "--prompt", "a cat", "-o", "z.pt"], [".safetensors"]),
    (["edit", "bomb.png", "--src", "a cat", "--tgt", "a dog"], ["bomb.png", "1,600 megapixels", "limit", "downscale"]),
    (
        ["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--preset", "gzip.yaml"],
        ["gzip.yaml", "not a text file"],
    ),
    (
        ["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--preset", "picture.yaml"],
        ["picture.yaml", "not a text"],
    ),
    (
        ["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--preset", "empty.yaml"],
        ["empty.yaml", "empty preset"],
    ),
    (["reconstruct", "empty.safetensors"], ["empty.safetensors", "not a readable safetensors file"]),
    (["reconstruct", "nan.safetensors"], ["nan.safetensors", "NaN or infinite"]),
]
# Values the tool cannot take: usage errors, exit code 2
BAD_VALUES = [
    (["invert", "photo.png", "--prompt", "a cat", "--device", "toaster"], ["toaster"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--preset", "wild"], ["unknown preset", "default"]),
    (["batch", "photo.png", "-s", "a cat", "-t", "a dog", "--guidance", "nan"], ["guidance = nan", "0..50"]),
    (["batch", "photo.png", "-s", "a cat", "-t", "a dog", "--tau", "3"], ["tau = 3.0"]),
    (["batch", "photo.png", "-s", "a cat", "-t", "a dog", "--mode", "bogus"], ["mode = 'bogus'"]),
    (["batch", "photo.png", "-s", "a cat", "-t", "a dog", "--preset", "nan.yaml"], ["nan.yaml", "guidance = nan"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--amplify", "dog"], ["WORD=VALUE"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--amplify", "dog=nan"], ["'dog=nan'", "0 to 20"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--amplify", "dog=inf"], ["'dog=inf'", "0 to 20"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--amplify", "dog=-2"], ["'dog=-2'", "0 to 20"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--tau", "3"], ["tau = 3.0", "0..1"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--guidance", "nan"], ["guidance = nan", "0..50"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--cross-replace", "inf"], ["cross_replace = inf"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--preset", "nan.yaml"], ["nan.yaml", "guidance = nan"]),
    (["edit", "photo.png", "--src", "a cat", "--tgt", "a dog", "--seed", "-1"], ["--seed -1", "2^63"]),
    (["invert", "photo.png", "--prompt", "a cat", "--seed", str(2**64)], ["--seed", "out of range"]),
    (["invert", "photo.png", "--prompt", "a cat", "--size", "100"], ["--size 100", "multiple of 64"]),
    (["invert", "photo.png", "--prompt", "a cat", "--size", "65536"], ["--size 65536", "4096"]),
    (["reconstruct", "photo.png", "--prompt", "a cat", "--guidance", "inf"], ["guidance = inf"]),
    (["reconstruct", "photo.png", "--prompt", "a cat", "--tau", "nan"], ["tau = nan"]),
]


@pytest.mark.parametrize("args, fragments", BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_bad_input_is_one_clear_line(work, args, fragments):
    folder, model = work
    _bad_files(folder)
    before = sorted(p.name for p in folder.iterdir())
    result = run(*args, "--model", model)
    assert_clean_error(result, *fragments, folder=folder, before=before)


@pytest.mark.parametrize("args, fragments", BAD_VALUES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_VALUES])
def test_a_value_the_tool_cannot_take_is_a_usage_error(work, args, fragments):
    folder, model = work
    _bad_files(folder)
    before = sorted(p.name for p in folder.iterdir())
    result = run(*args, "--model", model)
    assert_clean_error(result, *fragments, folder=folder, before=before, code=2)


def test_a_model_file_that_is_not_text_is_one_clear_line(work):
    folder, _ = work
    _bad_files(folder)
    result = run("invert", "photo.png", "--prompt", "a cat", "--model", "model.yaml")
    assert_clean_error(result, "model.yaml", "not a text file")


def test_unknown_model_lists_known_models(work):
    folder, _ = work
    result = run("invert", "photo.png", "--prompt", "a cat", "--model", "sd9")
    assert_clean_error(result, "unknown model 'sd9'", "sd15-4step-v1", "tiny", code=2)
    misspelt = run("invert", "photo.png", "--prompt", "a cat", "--model", "tinyy")
    assert_clean_error(misspelt, "unknown model 'tinyy'", "did you mean 'tiny'?", code=2)


def test_existing_output_is_refused_unless_overwrite(work):
    folder, model = work
    (folder / "out.png").write_bytes(b"keep me")
    args = ["reconstruct", "photo.png", "-p", "a cat", "-m", model, "--device", "cpu", "-o", "out.png"]
    assert_clean_error(run(*args), "out.png already exists", "--overwrite")
    assert (folder / "out.png").read_bytes() == b"keep me"
    assert run(*args, "--overwrite").exit_code == 0
    assert Image.open(folder / "out.png").size == (96, 64)


def test_unwritable_output_folder(work, monkeypatch):
    folder, model = work
    (folder / "locked").mkdir()
    import icdedit.files

    real = icdedit.files.os.access
    monkeypatch.setattr(
        icdedit.files.os, "access", lambda p, mode: False if str(p).endswith("locked") else real(p, mode)
    )
    result = run("invert", "photo.png", "-p", "a cat", "-m", model, "-o", "locked/z.safetensors")
    assert_clean_error(result, "locked", "not writable")


def test_latent_from_another_model_is_refused(work):
    folder, model = work
    assert run("invert", "photo.png", "-p", "a cat", "-m", model, "--device", "cpu").exit_code == 0
    latent = load_latent(folder / "photo.safetensors")
    save_latent(folder / "other.safetensors", latent.latent, {**latent.metadata, "forward_timesteps": "19,339,699"})
    result = run("edit", "other.safetensors", "--tgt", "a dog", "-m", model)
    assert_clean_error(result, "other.safetensors", "another model", "forward_timesteps")


def test_not_a_latent_file_is_refused(work):
    folder, model = work
    (folder / "junk.safetensors").write_bytes(b"\x00" * 16)
    assert_clean_error(run("reconstruct", "junk.safetensors", "-m", model), "junk.safetensors")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES], ids=["full disk", "read-only", "denied"])
@pytest.mark.parametrize("where", ["while writing", "creating the file"])
def test_an_output_that_cannot_be_written_is_one_line_and_leaves_nothing(work, monkeypatch, code, where):
    """A full disk fails while the image is written (half a file on disk), a read-only or
    forbidden folder when the file is created; root ignores permissions, so both are simulated
    where the operating system reports them."""
    folder, model = work
    before = sorted(p.name for p in folder.iterdir())
    if where == "while writing":

        def broken_save(self, fp, *args, **kwargs):
            with open(fp, "wb") as f:
                f.write(b"half")
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(Image.Image, "save", broken_save)
    else:

        def refused(*args, **kwargs):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr("icdedit.files.tempfile.mkstemp", refused)
    result = run("--quiet", "reconstruct", "photo.png", "-p", "a cat", "-m", model, "--device", "cpu", "-o", "out.png")
    assert_clean_error(result, "cannot write out.png", os.strerror(code), folder=folder, before=before)


def test_a_batch_item_that_cannot_be_written_is_recorded_and_leaves_nothing(work, monkeypatch):
    folder, model = work
    real_save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        if "photo" in Path(fp).name:
            with open(fp, "wb") as f:
                f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    make_photo(64, 64, seed=2).save(folder / "other.png")
    result = run(
        "batch",
        "photo.png",
        "other.png",
        "-s",
        "a cat",
        "-t",
        "a dog",
        "-m",
        model,
        "--device",
        "cpu",
        "--out",
        "out",
        "--json",
    )
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["done"] == [2] and "No space left on device" in summary["failed"]["1"]
    assert sorted(p.name for p in (folder / "out").iterdir()) == [
        "0002-other-a-dog.png",
        "results.jsonl",
        "results.jsonl.lock",  # the run's lock file stays (empty of meaning once no process holds it)
    ]


def test_debug_shows_the_exception(work):
    result = run("--debug", "invert", "missing.png", "--prompt", "a cat")
    assert isinstance(result.exception, IcdEditError)


def test_help_texts_come_from_the_registries():
    """The model list and the settings' defaults are read from the model YAMLs and the presets,
    so help stays true when a model or a preset changes."""
    from icdedit.families import FAMILIES
    from icdedit.presets import load_preset
    from icdedit.specs import known_model_names

    text = " ".join(run("edit", "--help").stdout.split()).replace("- ", "-")  # undo wrapping at hyphens
    assert all(name in text for name in known_model_names())
    for family in FAMILIES.values():
        preset = load_preset(family.default_preset)
        assert f"{preset.guidance:g} for {family.label}" in text and f"{family.resolution} for {family.label}" in text
        assert f"{family.edit_method} for {family.label}" in text  # --method's default
