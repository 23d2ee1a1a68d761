"""Every output records how it was made (icdedit/records.py), `icdedit info` reads it back, and
the command it prints makes the same pixels again; `--seed random`; generate's seed names."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from PIL import Image

from .helpers import assert_clean_error, batch_args, edit_args, generate_args, make_photo, one_json_object, run

SRC, TGT = "a photo of a cat", "a photo of a dog"


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A folder with photo.png, made the current folder (records name the photo, not its path)."""
    monkeypatch.chdir(tmp_path)
    make_photo(96, 64).save(tmp_path / "photo.png")
    return tmp_path


def info(path) -> dict:
    return one_json_object(run("info", path, "--json"), ["record", "reproduce"])


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def reproduce(shown: dict, output: str) -> np.ndarray:
    """Run the command `info` printed (writing `output`); its pixels."""
    args = shlex.split(shown["reproduce"])
    assert args[0] == "icdedit"
    result = run(*args[1:], "-o", output)
    assert result.exit_code == 0, result.output
    return pixels(output)


def test_an_edit_records_every_setting_as_used_and_its_command_makes_it_again(here):
    from icdedit.records import pixel_hash

    extra = [
        "--seed",
        "5",
        "--cross-replace",
        "0.5",
        "--amplify",
        "dog=3",
        "--side-by-side",
        "--save-latent",
        "e.safetensors",
    ]
    made = one_json_object(run(*edit_args("photo.png", SRC, TGT, "edit.png", extra=extra), "--json"))
    shown = info("edit.png")
    record = shown["record"]
    assert record["command"] == "edit" and record["seed"] == 5
    assert (record["prompt"], record["target"], record["model"]["name"]) == (SRC, TGT, "tiny")
    assert record["settings"]["cross_replace"] == 0.5 and record["settings"]["method"] == "p2p"
    assert record["run"] == {"device": "cpu", "dtype": "fp32", "attention": "sdpa"}  # resolved, never "auto"
    assert record["words"]["mode"] == "replace" and record["words"]["amplify"] == {"dog": 3.0}
    assert record["source"]["file"] == "photo.png" and record["source"]["size"] == [96, 64]
    assert record["source"]["pixels"] == pixel_hash(Image.open("photo.png"))
    assert record["processing_size"] == [64, 64] and record["size"] == made["size"]
    assert "--cross-replace 0.5" in shown["reproduce"] and "--amplify dog=3" in shown["reproduce"]
    assert np.array_equal(reproduce(shown, "again.png"), pixels("edit.png"))
    # the side-by-side carries the same recipe
    side = info(made["side_by_side"])["record"]
    assert side["image"] == "side-by-side" and side["settings"] == record["settings"]
    latent = info("e.safetensors")  # the final latents: the same recipe and command
    assert latent["record"]["image"] == "final latents" and latent["reproduce"] == shown["reproduce"]
    # human-readable lines end with the command
    lines = run("info", "edit.png").stdout.splitlines()
    assert "seed: 5" in lines and lines[-1].startswith("reproduce: icdedit edit photo.png")


def test_a_grid_cell_and_its_contact_sheet_record_their_cells(here):
    grid = ["--grid", "cross_replace=0.2,0.6", "--seed", "3"]
    made = one_json_object(run(*edit_args("photo.png", SRC, TGT, "g.png", extra=grid), "--json"))
    cell = made["grid"][1]
    shown = info(cell["output"])
    assert shown["record"]["grid_cell"] == {"cross_replace": 0.6}
    assert shown["record"]["settings"]["cross_replace"] == 0.6
    # a cell made alone: the same pixels (up to the float32 rounding of another batch shape)
    assert np.abs(reproduce(shown, "cell.png") - pixels(cell["output"])).max() <= 1
    sheet = info(made["sheet"])
    assert sheet["record"]["image"] == "contact sheet" and "--grid cross_replace=0.2,0.6" in sheet["reproduce"]


def test_a_batch_item_records_its_row_and_is_made_again_by_edit(here):
    result = run(*batch_args(["photo.png"], "out", extra=["--src", SRC, "--tgt", TGT, "--seed", "2"]))
    assert result.exit_code == 0, result.output
    (output,) = (here / "out").glob("*.png")
    shown = info(output)
    assert shown["record"]["batch_item"] == 1 and shown["record"]["seed"] == 2
    assert shown["reproduce"].startswith("icdedit edit photo.png --src")
    assert np.array_equal(reproduce(shown, "again.png"), pixels(output))


def test_reconstruct_and_invert_record_theirs(here):
    result = run("reconstruct", "photo.png", "--prompt", SRC, "-o", "rec.png", "--model", "tiny", "--size", "64")
    assert result.exit_code == 0, result.output
    shown = info("rec.png")
    assert shown["record"]["command"] == "reconstruct" and shown["record"]["guidance"] == 0.0
    assert np.array_equal(reproduce(shown, "rec2.png"), pixels("rec.png"))
    made = run("invert", "photo.png", "--prompt", SRC, "-o", "inv.safetensors", "--model", "tiny", "--size", "64")
    assert made.exit_code == 0, made.output
    latent = info("inv.safetensors")
    assert latent["record"]["command"] == "invert" and latent["record"]["source"]["file"] == "photo.png"
    assert latent["reproduce"].startswith("icdedit invert photo.png --prompt 'a photo of a cat' --seed 0 --size 64")


def test_generate_records_the_dtype_used_in_every_format(here):
    from icdedit.images import EXIF_IFD, EXIF_USER_COMMENT, read_user_comment

    prompt = "a red fox"
    for name in ("fox.png", "fox.jpg", "fox.webp"):
        noise = ["--save-noise", "fox.safetensors"] if name == "fox.png" else []
        result = run(*generate_args(prompt, extra=["--seed", "4", "-o", name, *noise]))
        assert result.exit_code == 0, result.output
        record = info(name)["record"]
        assert (record["prompt"], record["seed"], record["run"]["dtype"]) == (prompt, 4, "fp32")
        assert record["settings"]["dtype"] == "fp32"
    for name in ("fox.jpg", "fox.webp"):  # A1111's place: the EXIF UserComment, prompt first
        comment = read_user_comment(Image.open(name).getexif().get_ifd(EXIF_IFD)[EXIF_USER_COMMENT])
        assert comment.splitlines()[0] == prompt and "Seed: 4" in comment
    assert Image.open("fox.png").text["parameters"].startswith(f"{prompt}\nSteps: 4, Seed: 4")
    shown = info("fox.png")
    assert info("fox.safetensors")["reproduce"] == shown["reproduce"]  # the noise names what it was drawn for
    assert np.array_equal(reproduce(shown, "again.png"), pixels("fox.png"))


def test_several_seeds_name_generate_files_and_seed_random_is_told_and_recorded(here):
    made = one_json_object(run(*generate_args("a fox", extra=["--num", "2", "--seed", "7", "-o", "f.png", "--json"])))
    assert made["outputs"] == ["f-seed7.png", "f-seed8.png"]
    assert info("f-seed8.png")["record"]["seed"] == 8
    drawn = run(*generate_args("a fox", extra=["--seed", "random", "-o", "r.png", "--json"]))
    report = one_json_object(drawn)
    seed = report["seeds"][0]
    assert 0 <= seed <= 2**63 - 1 and f"--seed random drew seed {seed}" in drawn.stderr
    assert info("r.png")["record"]["seed"] == seed
    edited = run(*edit_args("photo.png", SRC, TGT, "e.png", extra=["--seed", "random", "--json"]))
    assert info("e.png")["record"]["seed"] == one_json_object(edited)["seed"]
    bad = run(*edit_args("photo.png", SRC, TGT, "x.png", extra=["--seed", "lucky"]))
    assert bad.exit_code == 2 and "'lucky' is not a whole number or 'random'" in bad.output


def test_info_on_a_file_without_a_record_is_one_line(here):
    assert_clean_error(run("info", "photo.png"), "photo.png carries no icdedit record")
    assert_clean_error(run("info", "missing.png"), "file not found: missing.png")


def test_the_pixel_hash_ignores_the_file_and_sees_every_pixel(tmp_path):
    from icdedit.records import parameters_text, pixel_hash

    photo = make_photo(40, 30)
    photo.save(tmp_path / "a.png")
    photo.save(tmp_path / "a.bmp")
    assert pixel_hash(Image.open(tmp_path / "a.png")) == pixel_hash(Image.open(tmp_path / "a.bmp"))
    changed = photo.copy()
    changed.putpixel((0, 0), (0, 0, 0) if photo.getpixel((0, 0)) != (0, 0, 0) else (1, 1, 1))
    assert pixel_hash(changed) != pixel_hash(photo)
    text = parameters_text({"command": "edit", "prompt": "a, b", "target": "c: d", "seed": 1, "model": {"name": "m"}})
    first, second = text.splitlines()  # A1111's parser splits at commas: a value with one is quoted
    assert first == "c: d" and second.startswith('Seed: 1, Model: m, Source prompt: "a, b", Command: edit')


def test_a_record_written_before_this_version_is_still_read(tmp_path):
    import json

    from icdedit.images import save_image
    from icdedit.records import read_record, reproduce_command

    made = {"command": "generate", "prompt": "a fox", "seed": 3, "model": "tiny", "guidance": 5.0, "icdedit": "0.1.0"}
    save_image(Image.new("RGB", (64, 64)), tmp_path / "old.jpg", {"icdedit": json.dumps(made)})
    record = read_record(tmp_path / "old.jpg")
    assert record["seed"] == 3
    assert reproduce_command(record)[:7] == ["icdedit", "generate", "a fox", "--guidance", "5", "--seed", "3"]
