"""`--src auto` (a captioning model) and `--swap OLD=NEW`, through the CLI.

The captioner is a random-weight BLIP of the real architecture at tiny sizes, saved by the test
in the hub layout with a small BERT vocabulary the test writes: its captions are word salad from
that vocabulary, but they are what transformers' own `generate` gives, and every caption starts
with the recorded prefix "a photo of", so `--swap photo=painting` always has its word.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .helpers import assert_clean_error, edit_args, invert_args, make_photo, one_json_object, run

WORDS = "a photo of cat dog sitting on the grass wooden chair with red hat".split()


def build_tiny_captioner(folder: Path) -> Path:
    """BlipForConditionalGeneration with tiny vision and text towers, its processor (a 32 px
    BlipImageProcessor, a BERT tokenizer over WORDS), saved with save_pretrained."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]  # [DEC]: BLIP's decoder start
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True, bos_token="[DEC]", model_max_length=64)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    torch.manual_seed(0)
    text = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    text.update(intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=64)
    text.update(bos_token_id=5, eos_token_id=3, sep_token_id=3, pad_token_id=0)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    vision.update(image_size=32, patch_size=8)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def reference_caption(folder: Path, photo: Path, settings: dict) -> str:
    """transformers' own generate with the recorded settings, the output lower-cased and stripped."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    processor = BlipProcessor.from_pretrained(folder)
    model = BlipForConditionalGeneration.from_pretrained(folder).eval()
    inputs = processor(images=Image.open(photo).convert("RGB"), text=settings["prefix"], return_tensors="pt")
    decoding = {k: settings[k] for k in ("num_beams", "max_new_tokens", "do_sample")}
    with torch.inference_mode():
        ids = model.generate(**inputs, **decoding)
    return " ".join(processor.decode(ids[0], skip_special_tokens=True).lower().split())


@pytest.fixture(scope="module")
def captioner(tmp_path_factory) -> Path:
    return build_tiny_captioner(tmp_path_factory.mktemp("captioner"))


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "cat.png"
    make_photo(80, 64).save(path)
    return path


def read_png_record(path: Path) -> dict:
    return json.loads(Image.open(path).text["icdedit"])


def test_src_auto_with_swap_is_the_edit_written_by_hand(tmp_path, captioner, photo):
    auto = tmp_path / "auto.png"
    args = edit_args(photo, "auto", [], auto, extra=["--swap", "photo=painting", "--captioner", captioner, "--json"])
    report = one_json_object(run(*args), ["caption", "src", "targets"])
    record = read_png_record(auto)
    assert record["source_prompt_from"] == "captioner"
    assert record["captioner"]["prefix"] == "a photo of" and record["captioner"]["do_sample"] is False
    caption = reference_caption(captioner, photo, record["captioner"])
    assert report["caption"] == report["src"] == record["caption"] == record["prompt"] == caption
    assert caption.startswith("a photo of")
    swapped = " ".join("painting" if w == "photo" else w for w in caption.split(" "))
    assert report["targets"] == [swapped] and record["target"] == swapped

    by_hand = tmp_path / "by-hand.png"
    assert run(*edit_args(photo, caption, swapped, by_hand)).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(auto)), np.asarray(Image.open(by_hand)))
    assert "caption" not in read_png_record(by_hand)


def test_inverted_caption_is_reused_from_the_latent_file(tmp_path, captioner, photo):
    latent = tmp_path / "cat.safetensors"
    report = one_json_object(run(*invert_args(photo, "auto", latent, extra=["--captioner", captioner, "--json"])))
    caption = report["caption"]
    assert report["prompt"] == caption and report["source_prompt_from"] == "captioner"

    edited = tmp_path / "lion.png"
    report = one_json_object(run(*edit_args(latent, None, [], edited, extra=["--swap", "photo=lion", "--json"])))
    assert report["src"] == caption and report["targets"] == [caption.replace("a photo of", "a lion of", 1)]
    record = read_png_record(edited)
    assert record["source_prompt_from"] == "captioner" and record["caption"] == caption


def test_missing_captioner_names_the_download(tmp_path, photo):
    result = run(*edit_args(photo, "auto", [], tmp_path / "x.png", extra=["--swap", "photo=painting"]))
    assert_clean_error(result, "captioner 'blip-large'", "icdedit download blip-large", hint=True)
    result = run(
        *edit_args(photo, "auto", [], tmp_path / "x.png", extra=["--swap", "a=b", "--captioner", tmp_path / "none"])
    )
    assert_clean_error(result, "--captioner", "icdedit download blip-large", hint=True)
    assert not (tmp_path / "x.png").exists()


def test_swap_word_not_in_the_caption_shows_the_caption(tmp_path, captioner, photo):
    extra = ["--swap", "zebra=lion", "--captioner", captioner]
    result = run(*edit_args(photo, "auto", [], tmp_path / "x.png", extra=extra))
    assert result.exit_code == 1 and "Traceback" not in result.output
    note, error = result.stderr.strip().splitlines()  # the caption is told as it is made, then the error
    assert note.startswith("caption of cat.png: 'a photo of")
    assert error.startswith("error: --swap zebra=lion: 'zebra' is not a word of the source prompt 'a photo of")
    assert "--src" in error.split("(hint: ")[1]
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--swap", "cat"], "--swap 'cat' is not OLD=NEW"),
        (["--swap", "cat="], "is not OLD=NEW"),
        (["--swap", "cat=tiger", "--tgt", "a photo of a tiger"], "--swap and --tgt"),
        ([], "Missing option '--tgt'"),
    ],
)
def test_bad_swap_flags_are_usage_errors(tmp_path, photo, extra, fragment):
    result = run(*edit_args(photo, "a photo of a cat", [], tmp_path / "x.png", extra=extra))
    assert_clean_error(result, fragment, code=2)


def test_the_registered_captioner_is_listed_and_used(tmp_path, captioner, photo):
    import shutil

    from icdedit.paths import weights_home

    listing = one_json_object(run("models", "--json"))["models"]
    entry = next(m for m in listing if m["model"] == "blip-large")
    folder = weights_home() / "captioner" / "blip-large"
    assert entry["kind"] == "captioner" and entry["download_command"] == "icdedit download blip-large"
    assert entry["parts"][0]["location"] == str(folder) and not entry["ready"]
    shutil.copytree(captioner, folder)  # as `icdedit download blip-large` lays it out
    try:
        output = tmp_path / "rec.png"
        args = ["reconstruct", photo, "--prompt", "auto", "-o", output, "--model", "tiny", "--size", 64, "--json"]
        report = one_json_object(run(*args), ["caption", "psnr"])
        record = read_png_record(output)
        assert record["captioner"]["captioner"] == "blip-large" and record["prompt"] == report["caption"]
        assert report["caption"] == reference_caption(captioner, photo, record["captioner"])
        listing = one_json_object(run("models", "--json"))["models"]
        assert next(m for m in listing if m["model"] == "blip-large")["ready"]
    finally:
        shutil.rmtree(folder)


def test_batch_captions_blank_and_auto_source_cells(tmp_path, captioner, photo):
    from icdedit.captions import CAPTION_SETTINGS

    from .helpers import batch_args

    caption = reference_caption(captioner, photo, CAPTION_SETTINGS)
    swapped = caption.replace("a photo of", "a painting of", 1)
    manifest = tmp_path / "edits.csv"
    manifest.write_text(
        "image,src,tgt,swap,output\n"
        f"{photo.name},,,photo=painting,swapped.png\n"  # a blank source cell: the caption, words swapped
        f"{photo.name},{caption},{swapped},,by-hand.png\n"  # the same prompts written by hand
        f"{photo.name},auto,a painting of a cat,,auto.png\n"  # an `auto` cell with its own target
    )
    out = tmp_path / "out"
    result = run(*batch_args([manifest], out, extra=["--captioner", captioner]))
    assert result.exit_code == 0, result.output
    assert "captioned 2 photo(s)" in result.stderr
    lines = {r["item"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert all(r["status"] == "done" for r in lines.values()), lines
    assert lines[1]["src"] == lines[3]["src"] == caption and lines[1]["tgt"] == swapped
    assert lines[1]["source_prompt_from"] == "captioner" and "source_prompt_from" not in lines[2]
    swapped_png, by_hand_png = np.asarray(Image.open(out / "swapped.png")), np.asarray(Image.open(out / "by-hand.png"))
    assert np.array_equal(swapped_png, by_hand_png)
    assert read_png_record(out / "auto.png")["caption"] == caption
    assert "caption" not in read_png_record(out / "by-hand.png")


def test_batch_swap_cell_beside_a_tgt_cell_fails_that_row(tmp_path, photo):
    from .helpers import batch_args

    manifest = tmp_path / "edits.csv"
    manifest.write_text(f"image,src,tgt,swap\n{photo.name},a photo of a cat,a photo of a dog,cat=dog\n")
    out = tmp_path / "out"
    result = run(*batch_args([manifest], out, extra=["--dry-run", "--json"]))
    assert result.exit_code == 1 and "both a tgt and a swap cell" in result.stdout
    assert_clean_error(run(*batch_args([photo], out, extra=["--src", "a", "--tgt", "b", "--swap", "a=b"])), code=2)


def test_the_page_describe_button_fills_the_caption(editor, tmp_path, captioner, photo):
    from icdedit.captions import CAPTION_SETTINGS
    from icdedit.errors import ModelError
    from icdedit.ui import UiSession, page_message

    session = UiSession(editor, tmp_path / "ui", captioner=captioner)
    assert session.describe(Image.open(photo)) == reference_caption(captioner, photo, CAPTION_SETTINGS)
    without = UiSession(editor, tmp_path / "ui2")  # the registered captioner, not downloaded (offline tests)
    with pytest.raises(ModelError) as raised:
        without.describe(Image.open(photo))
    assert "icdedit download blip-large" in page_message(raised.value, without.folder)
