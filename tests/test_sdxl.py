"""SDXL: a tiny random model with SDXL's topology (two text encoders, pooled text and size
conditioning, fp32 VAE), checked against a plain re-implementation of the official SDXL code
(running/sdxl/edit.py and utils/generation_sdxl.py), written here with separately merged
UNets and explicit loops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from icdedit.editor import Editor
from icdedit.errors import SettingsError
from icdedit.loader import load_model
from icdedit.presets import load_preset
from icdedit.specs import load_spec

from . import reference
from .conftest import in_float64, make_photo
from .test_cli import assert_clean_error, run
from .tolerance import Float32Error, assert_near_exact, assert_same_mathematics

SOURCE, TARGET = "a photo of a cat sitting on the grass", "a photo of a dog sitting on the grass"


@pytest.fixture(scope="session")
def xl_spec(tmp_path_factory):
    from icdedit.tiny import build_tiny_model

    return load_spec(build_tiny_model(tmp_path_factory.mktemp("tiny-xl"), family="sdxl"))


@pytest.fixture(scope="session")
def xl_editor(xl_spec):
    return Editor(load_model(xl_spec, device="cpu", dtype="fp32"))


@pytest.fixture(scope="session")
def xl_editor64(xl_spec):
    return Editor(load_model(xl_spec, device="cpu", dtype="fp64"))


@pytest.fixture(scope="session")
def xl_ref64(xl_spec, xl_ref):
    """The reference in float64 (tests/tolerance.py): the LoRAs merged in float64."""
    import copy

    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(xl_spec.base, subfolder="unet")
    return {
        "fwd": reference.merged_unet(xl_spec.teacher, xl_spec.forward_lora, config, dtype=torch.float64),
        "rev": reference.merged_unet(xl_spec.teacher, xl_spec.reverse_lora, config, dtype=torch.float64),
        "vae": copy.deepcopy(xl_ref["vae"]).double(),
        "toks": xl_ref["toks"],
        "encs": [copy.deepcopy(encoder).double() for encoder in xl_ref["encs"]],
    }


@pytest.fixture(scope="session")
def xl_ref(xl_spec):
    """The reference's own models: forward and reverse UNets merged separately, both encoders."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    base = xl_spec.base
    config = UNet2DConditionModel.load_config(base, subfolder="unet")
    return {
        "fwd": reference.merged_unet(xl_spec.teacher, xl_spec.forward_lora, config),
        "rev": reference.merged_unet(xl_spec.teacher, xl_spec.reverse_lora, config),
        "vae": AutoencoderKL.from_pretrained(base, subfolder="vae").eval(),
        "toks": [CLIPTokenizer.from_pretrained(base, subfolder=s) for s in ("tokenizer", "tokenizer_2")],
        "encs": [
            CLIPTextModel.from_pretrained(base, subfolder="text_encoder").eval(),
            CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2").eval(),
        ],
    }


@torch.no_grad()
def ref_embed(ref, prompts):
    """The official encode_prompt: penultimate states of both encoders, pooled from the second."""
    states = []
    for tok, enc in zip(ref["toks"], ref["encs"]):
        ids = tok(
            prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        out = enc(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled = out[0]
    return torch.cat(states, -1), pooled


@torch.no_grad()
def ref_jump(unet, x, t, s, tokens, pooled, w, size):
    acp, dtype = reference.alphas_cumprod(), unet.dtype
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32).repeat(x.shape[0], 1)
    x = x.to(dtype)
    eps = unet(
        x,
        t,
        encoder_hidden_states=tokens.to(dtype),
        timestep_cond=reference.w_embedding(w).to(dtype),
        added_cond_kwargs={"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)},
    ).sample
    x0 = (x - (1 - acp[t]).sqrt() * eps) / acp[t].sqrt()
    return x0 if s == 0 else acp[s].sqrt() * x0 + (1 - acp[s]).sqrt() * eps


@torch.no_grad()
def ref_invert(ref, spec, z0, prompt, seed):
    acp = reference.alphas_cumprod()
    tokens, pooled = ref_embed(ref, [prompt])
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    z = acp[19].sqrt() * z0 + (1 - acp[19]).sqrt() * noise
    ts = list(spec.forward_timesteps)
    for t, s in zip(ts, ts[1:] + [999]):
        z = ref_jump(ref["fwd"], z, t, s, tokens, pooled, [0.0], spec.resolution)
    return z


@torch.no_grad()
def ref_edit(ref, spec, z_T, source, target, guidance, tau):
    """Official sample_deterministic with amplify_prompt=[source]: the target row alone; its token
    states are the source's while t > tau * 1000; its pooled embedding is always the target's."""
    src_tokens, _ = ref_embed(ref, [source])
    tgt_tokens, tgt_pooled = ref_embed(ref, [target])
    ts = sorted(spec.reverse_timesteps, reverse=True)
    z = z_T
    for t, s in zip(ts, ts[1:] + [0]):
        tokens = src_tokens if t > tau * 1000 else tgt_tokens
        z = ref_jump(ref["rev"], z, t, s, tokens, tgt_pooled, [reference.w_of_t(t, guidance, tau)], spec.resolution)
    return z


def test_loader_builds_both_text_encoders_and_keeps_the_vae_in_float32(xl_spec):
    bundle = load_model(xl_spec, device="cpu", dtype="fp16")
    assert isinstance(bundle.text_encoder_2, CLIPTextModelWithProjection) and bundle.tokenizer_2.pad_token == "!"
    assert bundle.unet.dtype == torch.float16 and bundle.text_encoder_2.dtype == torch.float16
    assert bundle.vae.dtype == torch.float32  # SDXL's VAE overflows in fp16
    assert bundle.unet.config.addition_embed_type == "text_time" and bundle.unet.config.time_cond_proj_dim == 512


def test_prompt_embeddings_are_the_official_ones(xl_editor, xl_editor64, xl_ref, xl_ref64):
    got = xl_editor.prompt_embeddings([SOURCE, TARGET])
    assert got.tokens.shape == (2, 77, 64) and got.pooled.shape == (2, 32)
    got64 = xl_editor64.prompt_embeddings([SOURCE, TARGET])
    for part, float32, exact in zip(
        ("tokens", "pooled"), ref_embed(xl_ref, [SOURCE, TARGET]), ref_embed(xl_ref64, [SOURCE, TARGET])
    ):
        error = Float32Error.measure(float32, exact)
        assert_same_mathematics(getattr(got64, part), exact, error, part)
        assert_near_exact(getattr(got, part), exact, error, part)


def test_inversion_and_edit_equal_the_official_procedure(xl_spec, xl_editor, xl_editor64, xl_ref, xl_ref64):
    image = make_photo(64, 64, seed=5)

    def reference_inversion(ref):
        with torch.no_grad():
            x = torch.from_numpy(np.array(image)).to(ref["vae"].dtype).permute(2, 0, 1)[None] / 127.5 - 1
            z0 = ref["vae"].encode(x).latent_dist.mean * 0.13025
        return ref_invert(ref, xl_spec, z0, SOURCE, seed=2)

    exact_T = reference_inversion(xl_ref64)
    error = Float32Error.measure(reference_inversion(xl_ref), exact_T)
    assert_same_mathematics(xl_editor64.invert(image, SOURCE, seed=2).latent, exact_T, error, "float64 inversion")
    inversion = xl_editor.invert(image, SOURCE, seed=2)
    assert_near_exact(inversion.latent, exact_T, error, "inversion")

    settings = load_preset(xl_spec.default_preset)
    assert (settings.guidance, settings.tau) == (7.0, 0.7)
    result = xl_editor.edit(inversion, [TARGET], settings)
    exact = ref_edit(xl_ref64, xl_spec, inversion.latent, SOURCE, TARGET, 7.0, 0.7)
    error = Float32Error.measure(ref_edit(xl_ref, xl_spec, inversion.latent, SOURCE, TARGET, 7.0, 0.7), exact)
    assert result.latents.shape == (1, 4, 8, 8)  # the target row only: no source row is decoded
    assert_same_mathematics(xl_editor64.edit(in_float64(inversion), [TARGET], settings).latents, exact, error, "edit")
    assert_near_exact(result.latents, exact, error, "edit")
    assert result.words == [] and result.targets[0].size == (64, 64)


def test_source_row_is_a_reconstruction_and_targets_are_independent(xl_spec, xl_editor, xl_editor64):
    z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    rows, _ = xl_editor.edit_latents(z_T, SOURCE, [TARGET, "a painting of a cat sitting on the grass"])
    assert rows.shape == (3, 4, 8, 8)
    alone, _ = xl_editor.edit_latents(z_T, SOURCE, [TARGET])
    exact, _ = xl_editor64.edit_latents(z_T.double(), SOURCE, [TARGET])
    # a second target changes nothing for the first, up to the float32 round-off of a larger batch
    assert_near_exact(rows[:2], exact, Float32Error.measure(alone, exact), "source and first target")
    # the source row is the reconstruction: the source prompt decoded with w = 0 at every step
    from icdedit.editor import Inversion

    reconstruction = xl_editor.reconstruct(Inversion(z_T, SOURCE, 0, (64, 64), (64, 64)), guidance=0.0)[1]
    error = Float32Error.measure(alone[:1], exact[:1])
    assert_near_exact(reconstruction, exact[:1], error, "reconstruction")
    assert_near_exact(rows[:1], exact[:1], error, "source row")
    # and it is not the target's decoding with the same prompt: the target row has guidance
    same, _ = xl_editor.edit_latents(z_T, SOURCE, [SOURCE])
    assert (same[0] - same[1]).abs().max() > 100 * error.tolerance(exact)


def test_attention_control_options_are_refused_for_sdxl(xl_editor):
    inversion = xl_editor.invert(make_photo(64, 64), SOURCE)
    with pytest.raises(SettingsError, match="--blend: model 'tiny-xl' is SDXL, .* no attention control"):
        xl_editor.edit(inversion, [TARGET], blend=[("cat", "dog")])


def test_the_library_uses_the_models_default_preset_as_the_cli_does(xl_editor):
    """Editor.edit without settings takes the model's default preset (xl-default: guidance 7,
    tau 0.7), as the CLI does; exact, since both calls run the same computation."""
    inversion = xl_editor.invert(make_photo(64, 64), SOURCE)
    default = xl_editor.edit(inversion, [TARGET]).latents
    assert torch.equal(default, xl_editor.edit(inversion, [TARGET], load_preset("xl-default")).latents)
    assert not torch.equal(default, xl_editor.edit(inversion, [TARGET], load_preset("default")).latents)


def test_cli_edit_batch_and_models_with_sdxl(tmp_path, monkeypatch, xl_spec):
    monkeypatch.chdir(tmp_path)
    make_photo(96, 64).save("photo.png")
    model = str(xl_spec.path)
    result = run(
        "edit",
        "photo.png",
        "--src",
        SOURCE,
        "--tgt",
        TARGET,
        "-m",
        model,
        "--device",
        "cpu",
        "--json",
        "--side-by-side",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["guidance"] == 7.0 and report["settings"]["tau"] == 0.7 and report["words"] == []
    assert Image.open(report["outputs"][0]).size == (96, 64)
    assert Image.open(report["side_by_side"]).size[1] == 64 and Image.open(report["side_by_side"]).size[0] > 2 * 96
    assert "derived" not in result.stderr  # no P2P words are derived for SDXL
    saved = run(
        "edit",
        "photo.png",
        "--src",
        SOURCE,
        "--tgt",
        TARGET,
        "-m",
        model,
        "--device",
        "cpu",
        "--save-latent",
        "z.safetensors",
        "-o",
        "saved.png",
    )
    assert saved.exit_code == 0, saved.output
    from safetensors import safe_open

    with safe_open("z.safetensors", "pt") as f:
        assert f.get_tensor("latent").shape[0] == 1 and f.metadata()["rows"] == "targets"

    refused = run(
        "edit",
        "photo.png",
        "--src",
        SOURCE,
        "--tgt",
        TARGET,
        "-m",
        model,
        "--device",
        "cpu",
        "--blend",
        "cat",
        "dog",
        "--cross-replace",
        "0.5",
    )
    assert_clean_error(refused, "--cross-replace, --blend", "SDXL")

    (tmp_path / "m.csv").write_text(
        f"file_name,old_caption,edited_caption,blended_words\nphoto.png,{SOURCE},{TARGET},cat dog\n"
    )
    batch = run("batch", "m.csv", "-m", model, "--device", "cpu", "--out", "out", "--json")
    assert batch.exit_code == 0, batch.output
    assert len(json.loads(batch.stdout)["done"]) == 1 and "blend/amplify columns are not used" in batch.stderr
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert record["settings"]["guidance"] == 7.0  # the model's default preset

    listing = json.loads(run("models", "--json").stdout)
    assert {"sdxl-4step-v2", "sdxl-4step-v1", "sdxl-3step"} <= {m["model"] for m in listing}
