"""`icdedit generate`: text to image on the tiny SD1.5 and SDXL models, checked against plain
re-implementations of the official generation code (running/sd1.5/generate.py with
utils/generation.py's `runner`, `init_latent`, `cons_generation`, `get_noise_pred`; and
running/sdxl/generate.py with utils/generation_sdxl.py's `sample_deterministic`), written here
the way that code is organised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from icdedit.editor import Inversion
from icdedit.errors import InputError, UsageError
from icdedit.generation import read_prompts

from . import reference
from .helpers import assert_clean_error, run
from .reference import embed, official_pipeline, ref_embed, ref_jump
from .tolerance import Float32Error, assert_near_exact, assert_same_mathematics

FOX = "a photo of a red fox in the snow"
OWL = "a barred owl peeking out from dense tree branches"
LION = "a photo of a lion in the grass"


# -- the official procedures, written out ----------------------------------------------------------
def linear_schedule_old(t: int, guidance_scale: float, tau1: float, tau2: float) -> float:
    """utils/generation.py's, which both generation paths call under dynamic guidance."""
    t = t / 1000
    if t <= tau1:
        gamma = 1.0
    elif t >= tau2:
        gamma = 0.0
    else:
        gamma = (tau2 - t) / (tau2 - tau1)
    return gamma * guidance_scale


def reverse_pairs(timesteps):
    """Generator.__init__ with explicit reverse timesteps: descending, each to the next, the last to 0."""
    ts = sorted(timesteps, reverse=True)
    return list(zip(ts, ts[1:] + [0]))


@torch.no_grad()
def official_sd15(ref, spec, prompts, seed, guidance, tau, size):
    """runner(is_cons_forward=True): one CPU generator; init_latent draws ONE (1, 4, H/8, W/8)
    float32 noise and expands it over the batch of prompts; `dynamic_guidance = tau1 < 1`; each
    step, get_noise_pred evaluates [latent, latent] against [uncond, text] with one w embedding
    for both halves and keeps the text half (a guidance-distilled model: no CFG mixing)."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn((1, 4, size // 8, size // 8), generator=generator)
    z = latent.expand(len(prompts), 4, size // 8, size // 8).to(ref["rev"].dtype)
    text = embed(ref, prompts)
    context = torch.cat([embed(ref, [""]).expand(*text.shape), text])
    acp = reference.alphas_cumprod()
    for t, s in reverse_pairs(spec.reverse_timesteps):
        w = linear_schedule_old(t, guidance, tau, tau) if tau < 1.0 else guidance
        pair = torch.cat([z] * 2)
        eps = ref["rev"](
            pair, t, encoder_hidden_states=context, timestep_cond=reference.w_embedding([w] * len(pair)).to(z.dtype)
        ).sample
        eps = eps.chunk(2)[1]
        a_t, s_t = acp[t].sqrt(), (1 - acp[t]).sqrt()
        x0 = (z - s_t * eps) / a_t
        a_s, s_s = (1.0, 0.0) if s == 0 else (acp[s].sqrt(), (1 - acp[s]).sqrt())
        z = a_s * x0 + s_s * eps
    return z


@torch.no_grad()
def official_sdxl_noise(ref, spec, seed, dtype):
    """sample_deterministic's start: the SDXL pipeline's own prepare_latents with a CPU generator
    seeded per batch (a batch of one prompt here, so the seed is that batch's index)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = official_pipeline(StableDiffusionXLPipeline, ref, spec, ref["rev"])
    size = spec.resolution
    return pipe.prepare_latents(1, 4, size, size, dtype, "cpu", torch.Generator(device="cpu").manual_seed(seed), None)


@torch.no_grad()
def official_sdxl(ref, spec, prompt, noise, guidance, tau):
    """The loop of sample_deterministic (amplify_prompt None): w = linear_schedule_old(t, w) under
    use_dynamic_guidance, the prompt's token states and pooled embedding at every step, size ids
    (size, size, 0, 0, size, size) as compute_embeddings passes them."""
    tokens, pooled = ref_embed(ref, [prompt])
    z = noise.to(ref["rev"].dtype)
    for t, s in reverse_pairs(spec.reverse_timesteps):
        w = linear_schedule_old(t, guidance, tau, tau) if tau < 1.0 else guidance
        z = ref_jump(ref["rev"], z, t, s, tokens, pooled, [w], spec.resolution)
    return z


# -- numerics --------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [1.0, 0.6])
def test_sd15_generation_equals_the_official_procedure(tiny_spec, editor, editor64, ref, ref64, tau):
    """The prompts of one official batch share its one noise: icdedit gives them the same seed."""
    size, seed = tiny_spec.resolution, 11
    prompts = [FOX, OWL, LION]  # three: a batch of two takes the official code's editing branch (its quirk)
    exact = official_sd15(ref64, tiny_spec, prompts, seed, 7.0, tau, size)
    error = Float32Error.measure(official_sd15(ref, tiny_spec, prompts, seed, 7.0, tau, size), exact)
    made = editor.generate(prompts, [seed] * 3, guidance=7.0, tau=tau)
    made64 = editor64.generate(prompts, [seed] * 3, guidance=7.0, tau=tau)
    assert_same_mathematics(torch.cat([g.latent for g in made64]), exact, error, "float64 generation")
    assert_near_exact(torch.cat([g.latent for g in made]), exact, error, "generation")
    # the official image: 1 / 0.18215, the VAE, (x / 2 + 0.5).clamp(0, 1) * 255 truncated; icdedit
    # rounds (docs/numerics.md section 2), so each pixel is the truncated one or one level above
    with torch.no_grad():
        pixels = ref64["vae"].decode(exact / 0.18215).sample
    official = ((pixels / 2 + 0.5).clamp(0, 1) * 255).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    for generation, truncated in zip(made, official):
        step = np.asarray(generation.image).astype(int) - truncated.astype(int)
        assert step.min() >= -1 and step.max() <= 1, (step.min(), step.max())  # +-1: float32 at a boundary
    # dynamic guidance is visible: w = 0 above tau changes the result
    if tau < 1.0:
        constant = official_sd15(ref64, tiny_spec, [FOX], seed, 7.0, 1.0, size)
        assert (constant - exact[:1]).abs().max() > 100 * error.tolerance(exact)


@pytest.mark.parametrize("tau", [1.0, 0.6])
def test_sdxl_generation_equals_the_official_procedure(xl_spec, xl_editor, xl_editor64, xl_ref, xl_ref64, tau):
    seed = 3
    noise = official_sdxl_noise(xl_ref, xl_spec, seed, torch.float32)
    exact = official_sdxl(xl_ref64, xl_spec, OWL, noise.double(), 7.0, tau)
    error = Float32Error.measure(official_sdxl(xl_ref, xl_spec, OWL, noise, 7.0, tau), exact)
    (made,) = xl_editor.generate([OWL], [seed], guidance=7.0, tau=tau)
    (made64,) = xl_editor64.generate([OWL], [seed], guidance=7.0, tau=tau)
    assert torch.equal(made.noise.latent, noise)  # the same generator stream, the same float32 draw
    assert_same_mathematics(made64.latent, exact, error, "float64 generation")
    assert_near_exact(made.latent, exact, error, "generation")
    # the official fp16 run draws that noise in float16: the same draw, rounded once (exact)
    assert torch.equal(official_sdxl_noise(xl_ref, xl_spec, seed, torch.float16), noise.half())
    assert made.image.size == (xl_spec.resolution, xl_spec.resolution)


def test_every_image_has_its_own_seed_and_equals_that_seed_alone(editor, editor64):
    """A batch of seeds 7, 8, 9 gives seed 8's image in row 2, to float32 rounding (another batch
    shape may use other kernels); different seeds give different images."""
    batch = editor.generate([FOX] * 3, [7, 8, 9])
    (alone,) = editor.generate([FOX], [8])
    (exact,) = editor64.generate([FOX], [8])
    error = Float32Error.measure(alone.latent, exact.latent)
    assert_near_exact(batch[1].latent, exact.latent, error, "seed 8 in a batch")
    assert [g.noise.seed for g in batch] == [7, 8, 9]
    assert torch.equal(batch[1].noise.latent, alone.noise.latent)  # the same draw, wherever it is made
    assert (batch[0].latent - batch[1].latent).abs().max() > 100 * error.tolerance(exact.latent)
    assert torch.equal(editor.generate([FOX], [8])[0].latent, alone.latent)  # deterministic: same call twice


def test_generated_noise_decodes_its_source_row_with_the_generations_guidance(editor, editor64):
    """A generation's noise is an inversion whose source row is the generated image again: the
    same prompt, the same guidance. An inverted photo's source row is unguided."""
    (made,) = editor.generate([FOX], [5], guidance=6.0, tau=0.9)
    (exact,) = editor64.generate([FOX], [5], guidance=6.0, tau=0.9)
    error = Float32Error.measure(made.latent, exact.latent)
    assert (made.noise.source_guidance, made.noise.source_tau) == (6.0, 0.9)
    result = editor.edit(made.noise, ["a photo of a grey wolf in the snow"], decode_source=True)
    assert_near_exact(result.latents[:1], exact.latent, error, "source row")
    unguided = Inversion(made.noise.latent, FOX, 5, made.noise.processed_size, made.noise.original_size)
    other = editor.edit(unguided, ["a photo of a grey wolf in the snow"], decode_source=True)
    assert (other.latents[:1] - exact.latent).abs().max() > 100 * error.tolerance(exact.latent)


def test_library_refuses_bad_sizes_and_prompts(editor):
    with pytest.raises(UsageError, match="--width 100"):
        editor.generate([FOX], [0], size=(100, 64))
    with pytest.raises(InputError, match="empty"):
        editor.generate(["  "], [0])
    (wide,) = editor.generate([FOX], [0], size=(128, 64))
    assert wide.image.size == (128, 64) and wide.latent.shape == (1, 4, 8, 16)
    assert wide.noise.processed_size == wide.noise.original_size == (128, 64)


# -- the command line ------------------------------------------------------------------------------
def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _latent(path) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor("latent")


def test_generate_then_edit_through_the_cli(tmp_path, monkeypatch, tiny_model, editor, editor64):
    """generate --save-noise, then edit the noise file: with the generated prompt as target, the
    edit is the generated image again; the noise file is the exact one `invert -o` would write."""
    monkeypatch.chdir(tmp_path)
    made = run(
        "generate",
        FOX,
        "-m",
        tiny_model,
        "--seed",
        "4",
        "-o",
        "fox.png",
        "--save-noise",
        "fox.safetensors",
        "--save-latent",
        "fox-latent.safetensors",
        "--json",
    )
    assert made.exit_code == 0, made.output
    report = json.loads(made.stdout)
    assert report["seeds"] == [4] and report["images"] == [{"output": "fox.png", "seed": 4, "noise": "fox.safetensors"}]
    assert (report["guidance"], report["tau"]) == (7.0, 1.0)
    text = json.loads(Image.open("fox.png").text["icdedit"])
    assert (text["prompt"], text["seed"], text["guidance"]) == (FOX, 4, 7.0)
    with safe_open("fox.safetensors", framework="pt") as handle:
        meta = handle.metadata()
        noise = handle.get_tensor("latent")
    assert torch.equal(noise, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4)))
    assert meta["format"] == "icdedit-latent" and meta["prompt"] == FOX and meta["seed"] == "4"
    assert (meta["origin"], meta["source_guidance"], meta["source_tau"]) == ("generate", "7.0", "1.0")

    (exact,) = editor64.generate([FOX], [4])
    error = Float32Error.measure(editor.generate([FOX], [4])[0].latent, exact.latent)
    generated = _latent("fox-latent.safetensors")
    assert_near_exact(generated, exact.latent, error, "generated latent")

    same = run("edit", "fox.safetensors", "--tgt", FOX, "-o", "same.png", "--save-latent", "same.safetensors")
    assert same.exit_code == 0, same.output
    assert "with method p2p, guidance 7, tau 1;" in same.stderr
    rows = _latent("same.safetensors")
    assert_near_exact(rows[:1], exact.latent, error, "source row")
    assert_near_exact(rows[1:], exact.latent, error, "target row: the same prompt and guidance")
    assert np.abs(_pixels("same.png") - _pixels("fox.png")).max() <= 1  # +-1: float32 at a rounding boundary

    wolf = run(
        "edit",
        "fox.safetensors",
        "--tgt",
        "a photo of a grey wolf in the snow",
        "--guidance",
        "9",
        "-o",
        "wolf.png",
        "--save-latent",
        "wolf.safetensors",
    )
    assert wolf.exit_code == 0 and "with method p2p, tau 1;" in wolf.stderr
    rows = _latent("wolf.safetensors")
    assert_near_exact(rows[:1], exact.latent, error, "source row under another target guidance")
    assert (rows[1:] - exact.latent).abs().max() > 100 * error.tolerance(exact.latent)

    rec = run("reconstruct", "fox.safetensors", "-o", "rec.png", "--json")
    assert rec.exit_code == 0 and json.loads(rec.stdout)["guidance"] == 7.0
    assert np.abs(_pixels("rec.png") - _pixels("fox.png")).max() <= 1


def test_num_writes_numbered_images_each_equal_to_its_seed_alone(tmp_path, monkeypatch, tiny_model):
    """With the default --batch-size 1 an image is bit for bit its seed's alone: the same kernels
    on the same inputs."""
    monkeypatch.chdir(tmp_path)
    many = run(
        "generate",
        FOX,
        "-m",
        tiny_model,
        "--num",
        "3",
        "--seed",
        "7",
        "-o",
        "fox.png",
        "--save-noise",
        "noise.safetensors",
        "--json",
    )
    assert many.exit_code == 0, many.output
    report = json.loads(many.stdout)
    assert report["outputs"] == ["fox-seed7.png", "fox-seed8.png", "fox-seed9.png"] and report["seeds"] == [7, 8, 9]
    assert report["noise"] == ["noise-seed7.safetensors", "noise-seed8.safetensors", "noise-seed9.safetensors"]
    alone = run("generate", FOX, "-m", tiny_model, "--seed", "8", "-o", "alone.png")
    assert alone.exit_code == 0
    assert np.array_equal(_pixels("fox-seed8.png"), _pixels("alone.png"))
    assert not np.array_equal(_pixels("fox-seed7.png"), _pixels("fox-seed8.png"))
    assert json.loads(Image.open("fox-seed9.png").text["icdedit"])["seed"] == 9
    batched = run("generate", FOX, "-m", tiny_model, "--num", "3", "--seed", "7", "--batch-size", "3", "-o", "b.png")
    assert batched.exit_code == 0
    assert np.abs(_pixels("b-seed8.png") - _pixels("alone.png")).max() <= 1  # float32 rounding of another batch shape
    default = run("generate", FOX, "-m", tiny_model, "--num", "2")
    assert default.exit_code == 0 and default.stdout.split()[0] == "a-photo-of-a-red-fox-in-the-snow-seed0.png"
    again = run("generate", FOX, "-m", tiny_model, "-o", "fox-seed7.png")
    assert_clean_error(again, "fox-seed7.png already exists")


def test_sdxl_generated_noise_is_edited_with_prompt_to_prompt(xl_editor, xl_editor64):
    """SDXL photos default to the prompt switch, which at the generation's tau 1 would never
    switch: generated noise is edited with Prompt-to-Prompt instead, its source row the image."""
    (made,) = xl_editor.generate([OWL], [3])
    (exact,) = xl_editor64.generate([OWL], [3])
    error = Float32Error.measure(made.latent, exact.latent)
    target = "a barred owl peeking out from dense pine branches"
    result = xl_editor.edit(made.noise, [target], decode_source=True)
    assert result.words and result.words[0].mode == "replace"  # Prompt-to-Prompt's words
    assert_near_exact(result.latents[:1], exact.latent, error, "source row")
    (plain,) = xl_editor64.generate([target], [3])  # the target generated anew from the same noise
    assert (result.latents[1:].double() - plain.latent).abs().max() > 100 * error.tolerance(plain.latent)
    (regenerated,) = xl_editor.edit(made.noise, [OWL]).latents[1:].unsqueeze(0)
    assert_near_exact(regenerated, exact.latent, error, "the prompt itself as target")


def test_sdxl_generates_at_any_size_through_the_cli(tmp_path, monkeypatch, xl_spec):
    monkeypatch.chdir(tmp_path)
    result = run(
        "generate",
        OWL,
        "-m",
        xl_spec.path,
        "--width",
        "192",
        "--height",
        "64",
        "-o",
        "owl.png",
        "--save-noise",
        "owl.safetensors",
    )
    assert result.exit_code == 0, result.output
    assert Image.open("owl.png").size == (192, 64)
    assert "trained at about 64x64 pixels" in result.stderr  # three times its area
    edited = run("edit", "owl.safetensors", "--tgt", "a barred owl peeking out from dense pine branches", "-o", "e.png")
    assert edited.exit_code == 0, edited.output
    assert Image.open("e.png").size == (192, 64)


# -- prompt files ----------------------------------------------------------------------------------
COCO = (
    ",file_name,caption\n132871,COCO_val2014_000000246955.jpg,Green building with refrigeration units outside.\n"
    "31526,COCO_val2014_000000126876.jpg,An airplane with two propellor engines flying in the sky.\n"
)
PARTI = ",id,caption\n0,0,A city in 4-dimensional space-time\n1,1,Pneumonoultramicroscopicsilicovolcanoconiosis\n"


def test_prompt_files_in_the_official_formats_and_plain_text(tmp_path):
    (tmp_path / "coco.csv").write_text(COCO)
    (tmp_path / "parti.csv").write_text(PARTI)
    (tmp_path / "p.txt").write_text("a red fox\n\n  a blue bird  \n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat", "seed": 3}\n{"prompt": "a dog"}\n')
    assert [p for p, _, _ in read_prompts(tmp_path / "coco.csv")] == [
        "Green building with refrigeration units outside.",
        "An airplane with two propellor engines flying in the sky.",
    ]
    assert read_prompts(tmp_path / "parti.csv")[1] == ("Pneumonoultramicroscopicsilicovolcanoconiosis", None, None)
    assert read_prompts(tmp_path / "p.txt") == [("a red fox", None, None), ("a blue bird", None, None)]
    assert read_prompts(tmp_path / "p.jsonl") == [("a cat", 3, None), ("a dog", None, None)]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a cat"}\nnot json\n')
    assert read_prompts(tmp_path / "bad.jsonl")[1][2].startswith("line 2 is not JSON")


def test_a_prompt_file_runs_like_batch_resumes_and_shards(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parti.csv").write_text(PARTI)
    first = run(
        "generate", "--prompts", "parti.csv", "-m", tiny_model, "--out", "out", "--num", "2", "--seed", "10", "--json"
    )
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["done"] == [1, 2, 3, 4]
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [10, 11, 12, 13]
    assert [r["prompt"] for r in records] == ["A city in 4-dimensional space-time"] * 2 + [
        "Pneumonoultramicroscopicsilicovolcanoconiosis"
    ] * 2
    assert records[0]["settings"] == {"model": "tiny", "size": [64, 64], "guidance": 7.0, "tau": 1.0, "dtype": "fp32"}
    assert records[2]["output"] == "out/00003-pneumonoultramicroscopicsilicovolcanocon.png"
    # any image can be made again alone from its recorded seed
    alone = run("generate", records[2]["prompt"], "-m", tiny_model, "--seed", "12", "-o", "alone.png")
    assert alone.exit_code == 0 and np.array_equal(_pixels(records[2]["output"]), _pixels("alone.png"))

    again = run(
        "generate", "--prompts", "parti.csv", "-m", tiny_model, "--out", "out", "--num", "2", "--seed", "10", "--json"
    )
    assert json.loads(again.stdout)["skipped"] == [1, 2, 3, 4]
    (tmp_path / records[1]["output"]).unlink()
    changed = run(
        "generate",
        "--prompts",
        "parti.csv",
        "-m",
        tiny_model,
        "--out",
        "out",
        "--num",
        "2",
        "--seed",
        "10",
        "--guidance",
        "5",
        "--json",
    )
    assert json.loads(changed.stdout)["done"] == [1, 2, 3, 4]  # other settings: every item redone
    shard = run(
        "generate",
        "--prompts",
        "parti.csv",
        "-m",
        tiny_model,
        "--out",
        "sharded",
        "--num",
        "2",
        "--seed",
        "10",
        "--shard",
        "2/2",
        "--json",
    )
    assert json.loads(shard.stdout)["done"] == [2, 4]
    assert (tmp_path / "sharded" / "results-shard-2-of-2.jsonl").is_file()


def test_a_bad_row_fails_alone_and_long_prompts_are_noted(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    long_prompt = " ".join(["a very long prompt about a fox"] * 20)
    (tmp_path / "rows.csv").write_text(f"caption,seed\na cat,5\n,\na dog,x\n{long_prompt},\n")
    result = run("generate", "--prompts", "rows.csv", "-m", tiny_model, "--out", "out", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["done"] == [1, 4] and set(summary["failed"]) == {"2", "3"}
    assert "empty" in summary["failed"]["2"] and "seed 'x'" in summary["failed"]["3"]
    records = {json.loads(line)["item"]: json.loads(line) for line in open("out/results.jsonl")}
    assert records[1]["seed"] == 5 and records[4]["seed"] == 3  # a seed cell, else --seed + item - 1
    assert "truncated" in records[4]["warning"] and "1 prompt(s) were longer" in result.stderr
    # the last seeds a generator takes: item 2's seed would be 2^63, so it fails alone
    Path("two.txt").write_text("a cat\na dog\n")
    top = run("generate", "--prompts", "two.txt", "-m", tiny_model, "--out", "top", "--seed", str(2**63 - 1), "--json")
    assert top.exit_code == 1 and "past 2^63 - 1" in json.loads(top.stdout)["failed"]["2"]


def test_images_carry_their_seed_in_every_format_with_a_place_for_it(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    for name in ("a.jpg", "a.webp", "a.tiff"):
        assert run("generate", FOX, "-m", tiny_model, "--seed", "11", "-o", name).exit_code == 0
    image = Image.open("a.jpg")
    assert json.loads(json.loads(image.info["comment"])["icdedit"])["seed"] == 11
    for name in ("a.webp", "a.tiff"):
        description = Image.open(name).getexif()[0x010E]
        assert json.loads(json.loads(description)["icdedit"])["seed"] == 11


@pytest.mark.parametrize(
    ("args", "fragments", "code"),
    [
        (["generate", ""], ["prompt is empty"], 1),
        (["generate", FOX, "--prompts", "p.txt"], ["either a PROMPT or --prompts"], 2),
        (["generate", "--prompts", "p.txt", "-o", "x.png"], ["-o cannot be used here"], 2),
        (["generate", FOX, "--out", "d"], ["--out cannot be used here"], 2),
        (["generate", FOX, "--width", "100"], ["--width 100 is not a multiple of 64"], 2),
        (["generate", FOX, "--num", "0"], ["--num 0"], 2),
        (["generate", FOX, "--guidance", "nan"], ["guidance"], 2),
        (["generate", FOX, "--save-noise", "n.pt"], ["must end in .safetensors"], 1),
        (["generate", FOX, "-o", "x.gif"], ["image format"], 1),
        (["generate", "--prompts", "empty.txt"], ["no prompts"], 2),
        (["generate", "--prompts", "empty.csv"], ["empty"], 2),
        (["generate", "--prompts", "broken.yaml"], ["not valid YAML"], 2),
        (["generate", "--prompts", "nocaption.csv"], ["no caption or prompt column", "'a', 'b'"], 2),
        (["generate", "--prompts", "missing.txt"], ["prompt file not found"], 2),
        (["generate", "--prompts", "p.txt", "--out", "p.txt"], ["cannot create the --out folder"], 1),
        (["generate", FOX, "--save-noise", "n.safetensors", "--save-latent", "./x/../n.safetensors"], ["same file"], 1),
    ],
)
def test_bad_generate_input_is_one_clear_line(tmp_path, monkeypatch, tiny_model, args, fragments, code):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("a fox\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "nocaption.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "broken.yaml").write_text("- prompt: [unclosed\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run(*args, "-m", tiny_model)
    assert_clean_error(result, *fragments, code=code)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_a_long_prompt_is_said_to_be_truncated(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    result = run("generate", " ".join(["a fox in the snow"] * 30), "-m", tiny_model, "-o", "long.png")
    assert result.exit_code == 0 and "truncated to" in result.stderr


def test_help_shows_examples():
    result = run("generate", "--help")
    assert result.exit_code == 0 and "Examples" in result.stdout and "--save-noise" in result.stdout


def test_the_start_noise_is_the_official_init_latent_draw():
    """Exact: the same generator call (the official SD1.5 launch script's seed)."""
    from icdedit.noise import generation_noise

    official = torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(453645634))
    assert torch.equal(generation_noise((1, 4, 64, 64), 453645634), official)
