"""SDXL: a tiny random model with SDXL's topology (two text encoders, pooled text and size
conditioning, fp32 VAE), checked against a plain re-implementation of the official SDXL code
(running/sdxl/edit.py and utils/generation_sdxl.py), written here with separately merged
UNets and explicit loops."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPTextModelWithProjection

from icdedit.editor import Inversion
from icdedit.errors import SettingsError
from icdedit.loader import load_model
from icdedit.preparation import prepare_edit
from icdedit.presets import load_preset

from . import reference
from .helpers import P2P_SIZE, XL_SOURCE, assert_clean_error, in_float64, make_photo, official_controller, run
from .reference import official_pipeline, ref_embed, ref_jump
from .tolerance import Float32Error, assert_near_exact, assert_same_mathematics

SOURCE, TARGET = XL_SOURCE, "a photo of a dog sitting on the grass"


@torch.no_grad()
def official_start(ref, spec, image, seed):
    """The official SDXL inversion's start, by the very diffusers call the official code makes
    (utils/generation_sdxl.py: inverse_sample_deterministic -> the img2img pipeline's
    `prepare_latents(images, timesteps[0], batch_size, 1, dtype, device,
    generator=torch.Generator().manual_seed(seed))`), float32 on the CPU."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = official_pipeline(StableDiffusionXLImg2ImgPipeline, ref, spec, ref["fwd"])
    pixels = pipe.image_processor.preprocess(image)
    start = torch.tensor(spec.forward_timesteps[0])
    return pipe.prepare_latents(
        pixels, start, 1, 1, torch.float32, "cpu", generator=torch.Generator().manual_seed(seed)
    )


@torch.no_grad()
def ref_start(ref, spec, image, seed):
    """The same start written out, in the reference's dtype (float64 for the exact result): one
    CPU generator; its first float32 draw samples the posterior (mean + std * eps), times 0.13025;
    its next one is the noise added at t = 19. (A float64 run draws the same float32 numbers.)"""
    dtype, acp = ref["vae"].dtype, reference.alphas_cumprod()
    x = torch.from_numpy(np.array(image)).to(dtype).permute(2, 0, 1)[None] / 127.5 - 1
    posterior = ref["vae"].encode(x).latent_dist
    generator = torch.Generator().manual_seed(seed)
    sample = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(dtype)
    z0 = sample * ref["vae"].config.scaling_factor
    noise = torch.randn(z0.shape, generator=generator)  # float32, times float32 coefficients, as released
    t = spec.forward_timesteps[0]
    return acp[t].sqrt() * z0 + (1 - acp[t]).sqrt() * noise


@torch.no_grad()
def ref_invert(ref, spec, z, prompt):
    """From the start: the forward jumps, the source prompt, w = 0 (inverse_sample_deterministic)."""
    tokens, pooled = ref_embed(ref, [prompt])
    ts = list(spec.forward_timesteps)
    for t, s in zip(ts, ts[1:] + [999]):
        z = ref_jump(ref["fwd"], z, t, s, tokens, pooled, [0.0], spec.resolution)
    return z


@torch.no_grad()
def ref_edit(ref, spec, z_T, target, guidance, tau, amplify_prompt):
    """Official sample_deterministic (use_dynamic_guidance=True, tau1 = tau2 = tau): the target
    row alone; while t > tau * 1000 its token states are `amplify_prompt`'s when one is given
    (the official README passes the source), else its own; its pooled embedding is always the
    target's."""
    tgt_tokens, tgt_pooled = ref_embed(ref, [target])
    early_tokens = ref_embed(ref, [amplify_prompt])[0] if amplify_prompt is not None else tgt_tokens
    ts = sorted(spec.reverse_timesteps, reverse=True)
    z = z_T
    for t, s in zip(ts, ts[1:] + [0]):
        tokens = early_tokens if t > tau * 1000 else tgt_tokens
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


def test_inversion_starts_as_the_official_code_does(xl_spec, xl_editor, xl_editor64, xl_ref, xl_ref64):
    """A posterior sample from the seed's first draw, the start noise from its second: the
    diffusers call the official code makes, then the forward jumps."""
    image = make_photo(64, 64, seed=5)
    exact_start = ref_start(xl_ref64, xl_spec, image, seed=2)
    official = official_start(xl_ref, xl_spec, image, seed=2)
    # the written-out reference is the diffusers procedure: a wrong draw order or a posterior
    # mean would differ by about the noise itself (order 1), not by float32 round-off
    error = Float32Error.measure(official, exact_start)
    assert error.relative < 1e-4, error
    assert_near_exact(ref_start(xl_ref, xl_spec, image, seed=2), exact_start, error, "written-out start")

    exact_T = ref_invert(xl_ref64, xl_spec, exact_start, SOURCE)
    error = Float32Error.measure(ref_invert(xl_ref, xl_spec, official, SOURCE), exact_T)
    assert_same_mathematics(xl_editor64.invert(image, SOURCE, seed=2).latent, exact_T, error, "float64 inversion")
    assert_near_exact(xl_editor.invert(image, SOURCE, seed=2).latent, exact_T, error, "inversion")
    # the seed matters through both draws: another seed, another posterior sample and noise
    other = ref_invert(xl_ref64, xl_spec, ref_start(xl_ref64, xl_spec, image, seed=3), SOURCE)
    assert (other - exact_T).abs().max() > 100 * error.tolerance(exact_T)


def test_the_posterior_sample_is_the_official_one_not_the_mean(xl_spec, xl_editor64, xl_ref64):
    """z0 is mean + std * (first draw), so it is not the mean the SD1.5 inversion starts from."""
    image = make_photo(64, 64, seed=6)
    mean, std = xl_editor64.encode_posterior(image)
    z0 = xl_editor64.start_latent(image, seed=4)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(4)).double()
    assert torch.equal(z0, (mean + std * eps) * 0.13025)  # the same three float64 operations on the same inputs
    assert (z0 - mean * 0.13025).abs().max() > 0  # std > 0: the sample is not the mean


@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (1, 4, 128, 128), (1, 4, 112, 144), (1, 4, 96, 168)])
def test_float16_draws_equal_rounded_float32_draws_for_latent_shapes(shape):
    """The official fp16 run draws its start noise in float16; icdedit draws float32 (noise.py).
    On the CPU they agree for every latent shape (4 x h x w, h and w multiples of 8). Exact:
    the same generator stream, one rounding to float16 on each side."""
    half = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=torch.float16)
    single = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=torch.float32)
    assert torch.equal(half, single.half())


@pytest.mark.parametrize("amplify_prompt", ["source", "target", "a watercolour of a dog sitting on the grass"])
def test_prompt_switch_edits_equal_the_official_procedure(
    xl_spec, xl_editor, xl_editor64, xl_ref, xl_ref64, amplify_prompt
):
    """sample_deterministic with amplify_prompt=[source] (the README's), None (`target`), or any text."""
    z_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    official = {"source": SOURCE, "target": None}.get(amplify_prompt, amplify_prompt)
    settings = replace(load_preset(xl_spec.default_preset), amplify_prompt=amplify_prompt)
    assert (settings.guidance, settings.tau) == (7.0, 0.7)
    exact = ref_edit(xl_ref64, xl_spec, z_T.double(), TARGET, 7.0, 0.7, official)
    error = Float32Error.measure(ref_edit(xl_ref, xl_spec, z_T, TARGET, 7.0, 0.7, official), exact)
    inversion = Inversion(z_T, SOURCE, 0, (64, 64), (64, 64))
    result = xl_editor.edit(inversion, [TARGET], settings)
    assert result.latents.shape == (1, 4, 8, 8)  # the target row only: no source row is decoded
    assert_same_mathematics(xl_editor64.edit(in_float64(inversion), [TARGET], settings).latents, exact, error, "edit")
    assert_near_exact(result.latents, exact, error, "edit")
    assert result.words == [] and result.targets[0].size == (64, 64)
    if official is not None:  # the switch is visible: decoding without it is another result
        plain = ref_edit(xl_ref64, xl_spec, z_T.double(), TARGET, 7.0, 0.7, None)
        assert (plain - exact).abs().max() > 100 * error.tolerance(exact)


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


def test_options_a_method_would_ignore_are_refused(xl_editor):
    inversion = xl_editor.invert(make_photo(64, 64), SOURCE)
    with pytest.raises(SettingsError, match=r"--blend: model 'tiny-xl' \(SDXL\) edits with the 'switch' method"):
        xl_editor.edit(inversion, [TARGET], blend=[("cat", "dog")])
    p2p = load_preset("xl-default").with_overrides(method="p2p")
    with pytest.raises(SettingsError, match="--amplify-prompt: .* 'p2p' method .* switches no prompts"):
        prepare_edit(xl_editor.spec, SOURCE, [TARGET], p2p, given=["amplify_prompt"])


# -- Prompt-to-Prompt on SDXL ----------------------------------------------------------------------
PARTIAL = 0.9  # on the tiny SDXL model's maps, a blend threshold whose mask covers part of the image


@torch.no_grad()
def ref_p2p(ref, spec, z_T, source, targets, settings, words, amplify_prompt=None):
    """Prompt-to-Prompt on SDXL the way the official SD1.5 code runs it (explicit maps in every
    layer, every map stored, tests/official_plan.py's control data from the first tokenizer),
    on SDXL's inputs (pooled text and size ids per row), with local blend reading the cross maps
    at 1/32 of the image in the down and up blocks, and, when given, the prompt switch of
    sample_deterministic on the target rows."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    n, (h, w) = len(targets), z_T.shape[2:]
    level = (h // 4) * (w // 4)
    ctrl = official_controller(
        ref["toks"][0],
        source,
        targets,
        settings,
        words,
        (h, w),
        blend_maps=lambda store: [m for m in store["down"] + store["up"] if m.shape[2] == level],
    )
    tokens, pooled = ref_embed(ref, [source, *targets])
    early = tokens.clone()
    if amplify_prompt is not None:
        early[1:] = ref_embed(ref, [amplify_prompt])[0]
    unet, z = ref["rev"], z_T.expand(1 + n, -1, -1, -1)
    reference.install_explicit(unet, ctrl)
    try:
        ts = sorted(spec.reverse_timesteps, reverse=True)
        for k, (t, s) in enumerate(zip(ts, ts[1:] + [0])):
            ctrl.begin_step(k)
            rows_w = [0.0] + [reference.w_of_t(t, settings.guidance, settings.tau)] * n
            step_tokens = early if t > settings.tau * 1000 else tokens
            z = ctrl.step_callback(ref_jump(unet, z, t, s, step_tokens, pooled, rows_w, h * 8))
    finally:
        unet.set_attn_processor(AttnProcessor2_0())
    return z


P2P_CASES = [
    ("replace, derived amplify and blend", [TARGET], {}, {"method": "p2p", "blend_threshold": PARTIAL}),
    (
        "refine, inserted words",
        ["a photo of a small cat sitting on the green grass"],
        {},
        {"method": "p2p", "self_replace": 1.0},
    ),
    ("two targets", [TARGET, "a photo of a cat sitting on the snow"], {}, {"method": "p2p", "cross_replace": 0.6}),
    ("p2p with the prompt switch", [TARGET], {}, {"method": "p2p+switch", "blend_threshold": PARTIAL}),
]


@pytest.mark.parametrize("label, targets, words, overrides", P2P_CASES, ids=[c[0] for c in P2P_CASES])
def test_p2p_on_sdxl_equals_the_explicit_reference(
    xl_spec, xl_editor, xl_editor64, xl_ref, xl_ref64, xl_inversion, label, targets, words, overrides
):
    settings = load_preset("xl-default").with_overrides(**overrides)
    result = xl_editor.edit(xl_inversion, targets, settings, **words)
    early = SOURCE if settings.method == "p2p+switch" else None
    args = (xl_spec, xl_inversion.latent, SOURCE, targets, settings, result.words, early)
    exact = ref_p2p(xl_ref64, *args[:1], xl_inversion.latent.double(), *args[2:])
    error = Float32Error.measure(ref_p2p(xl_ref, *args), exact)
    assert result.latents.shape == (1 + len(targets), 4, 32, 32)  # source and targets, one batch
    ours64 = xl_editor64.edit(in_float64(xl_inversion), targets, settings, **words).latents
    assert_same_mathematics(ours64, exact, error, label)
    assert_near_exact(result.latents, exact, error, label)
    if early is not None:  # the switch is visible: attention control alone is another result
        alone = ref_p2p(xl_ref64, xl_spec, xl_inversion.latent.double(), SOURCE, targets, settings, result.words)
        assert (alone - exact).abs().max() > 100 * error.tolerance(exact)
    if result.words[0].blend_target and settings.blend_threshold == PARTIAL:  # a partial mask
        same = result.latents[1] == result.latents[0]
        assert same.any() and not same.all()


def test_p2p_on_sdxl_keeps_row_zero_exactly_outside_the_blend_mask(xl_editor, xl_inversion):
    """Exact: outside the mask the blend computes z0 + 0 * (z1 - z0), which is z0 to the bit."""
    settings = load_preset("xl-default").with_overrides(method="p2p", blend_threshold=PARTIAL)
    result = xl_editor.edit(xl_inversion, [TARGET], settings, blend=[("cat", "dog")])
    same = result.latents[1] == result.latents[0]
    assert same.any() and not same.all()
    # the mask is spatial, nearest-upsampled from the 8x8 blend level: whole 4x4 blocks are kept
    # (a block edited in every channel may still equal row 0 in one channel by chance)
    blocks = same.all(dim=0).reshape(8, 4, 8, 4).permute(0, 2, 1, 3).flatten(2)
    assert torch.equal(blocks.all(dim=2), blocks.any(dim=2))


def test_p2p_on_sdxl_reads_blend_maps_at_one_resolution_only(xl_editor, xl_inversion, monkeypatch):
    """Explicit maps only where changed or read: the cross window's step (every cross layer)
    and the local-blend layers at 1/32 of the image (down and up blocks, not the mid block)."""
    from icdedit.p2p import control as control_module

    calls, real = [], control_module.attention_probs

    def counting(q, k, scale):
        calls.append(q.shape[2])
        return real(q, k, scale)

    monkeypatch.setattr(control_module, "attention_probs", counting)
    unet = xl_editor.bundle.unet
    cross = [n for n, m in unet.named_modules() if getattr(m, "is_cross_attention", False)]
    level = (P2P_SIZE // 32) ** 2
    blend_layers = [n for n in cross if not n.startswith("mid") and _queries(unet, n, P2P_SIZE) == level]
    assert blend_layers and any(n.startswith("mid") and _queries(unet, n, P2P_SIZE) == level for n in cross)
    settings = load_preset("xl-default").with_overrides(method="p2p", cross_replace=0.3)
    xl_editor.edit(xl_inversion, [TARGET], settings)
    assert len(calls) == len(cross) + 3 * len(blend_layers)  # step 0: all; steps 1-3: the blend level
    assert set(calls[len(cross) :]) == {level}


def _queries(unet, name: str, image_side: int) -> int:
    """Query count of an attention layer: its block's resolution (down i and up j halve i times)."""
    parts = name.split(".")
    if parts[0] == "mid_block":
        halvings = len(unet.down_blocks) - 1
    elif parts[0] == "down_blocks":
        halvings = int(parts[1])
    else:
        halvings = len(unet.up_blocks) - 1 - int(parts[1])
    return (image_side // 8 // 2**halvings) ** 2


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
    edit = ("edit", "photo.png", "--src", SOURCE, "--tgt", TARGET, "-m", model, "--device", "cpu")
    result = run(*edit, "--json", "--side-by-side")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    settings = report["settings"]
    assert (settings["guidance"], settings["tau"], settings["method"], settings["amplify_prompt"]) == (
        7.0,
        0.7,
        "switch",
        "source",
    )
    assert report["words"] == [] and "derived" not in result.stderr  # no P2P words for the prompt switch
    assert Image.open(report["outputs"][0]).size == (96, 64)
    assert Image.open(report["side_by_side"]).size[1] == 64 and Image.open(report["side_by_side"]).size[0] > 2 * 96

    saved = run(*edit, "--save-latent", "z.safetensors", "-o", "saved.png")
    assert saved.exit_code == 0, saved.output
    from safetensors import safe_open

    with safe_open("z.safetensors", "pt") as f:  # the rows the help promises, for every method
        assert f.get_tensor("latent").shape[0] == 2 and f.metadata()["rows"] == "source, targets"

    refused = run(*edit, "--blend", "cat", "dog", "--cross-replace", "0.5")
    assert_clean_error(refused, "--cross-replace, --blend", "SDXL", "'switch' method", "--method p2p", code=2)

    p2p = run(*edit, "--method", "p2p", "--blend", "cat", "dog", "--json", "-o", "p2p.png")
    assert p2p.exit_code == 0, p2p.output
    words = json.loads(p2p.stdout)["words"][0]
    assert (
        words["blend"] == [["cat"], ["dog"]] and words["amplify"] == {"dog": 4.0} and "blend cat -> dog" in p2p.stderr
    )
    ignored = run(*edit, "--method", "p2p", "--amplify-prompt", "target")
    assert_clean_error(ignored, "--amplify-prompt", "'p2p'", code=2)
    assert_clean_error(run(*edit, "--method", "paint"), "method = 'paint'", "p2p+switch", code=2)

    free = run(*edit, "--amplify-prompt", "a watercolour of a cat", "--json", "-o", "free.png")
    assert free.exit_code == 0, free.output
    assert json.loads(free.stdout)["settings"]["amplify_prompt"] == "a watercolour of a cat"
    pixels = [np.asarray(Image.open(name)) for name in ("saved.png", "free.png", "p2p.png")]
    assert (pixels[0] != pixels[1]).any() and (pixels[0] != pixels[2]).any()  # each choice changes the edit

    (tmp_path / "m.csv").write_text(
        "file_name,old_caption,edited_caption,blended_words,method,amplify_prompt\n"
        f"photo.png,{SOURCE},{TARGET},cat dog,,\n"
        f"photo.png,{SOURCE},{TARGET},cat dog,p2p,\n"
        f"photo.png,{SOURCE},{TARGET},,,target\n"
    )
    batch = run("batch", "m.csv", "-m", model, "--device", "cpu", "--out", "out", "--json")
    assert batch.exit_code == 0, batch.output
    assert len(json.loads(batch.stdout)["done"]) == 3 and "blend/amplify cells of row(s) 1 are not" in batch.stderr
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    methods = [(r["settings"]["method"], r["settings"]["amplify_prompt"], r["words"]) for r in records]
    assert methods[0] == ("switch", "source", []) and methods[2] == ("switch", "target", [])
    assert methods[1][:2] == ("p2p", "source") and methods[1][2][0]["blend"] == [["cat"], ["dog"]]
    assert records[0]["settings"]["guidance"] == 7.0  # the model's default preset
    # a row's cells that its method would ignore fail that row, naming the method that uses them
    (tmp_path / "bad.csv").write_text(
        f"image,src,tgt,method,cross_replace,amplify_prompt\nphoto.png,{SOURCE},{TARGET},switch,0.5,\n"
        f"photo.png,{SOURCE},{TARGET},p2p,,target\n"
    )
    bad = run("batch", "bad.csv", "-m", model, "--device", "cpu", "--out", "bad", "--json")
    assert bad.exit_code == 1 and sorted(json.loads(bad.stdout)["failed"]) == ["1", "2"], bad.output
    errors = [json.loads(line)["error"] for line in (tmp_path / "bad" / "results.jsonl").read_text().splitlines()]
    assert "'switch' method" in errors[0] and "--method p2p" in errors[0] and "'p2p' method" in errors[1]

    listing = json.loads(run("models", "--json").stdout)["models"]
    assert {"sdxl-4step-v2", "sdxl-4step-v1", "sdxl-3step"} <= {m["model"] for m in listing}


def test_sdxl_processes_photos_at_about_its_area(xl_editor, editor):
    """SDXL: any aspect ratio at about resolution^2 pixels (its training buckets); SD1.5: the
    long side at its resolution, as before."""
    assert xl_editor.processing_size((4032, 3024), 1024) == (1152, 896)
    assert xl_editor.processing_size((3024, 4032), 1024) == (896, 1152)
    assert xl_editor.processing_size((1920, 1080), 1024) == (1344, 768)
    assert xl_editor.processing_size((500, 500), 1024) == (1024, 1024)
    assert xl_editor.processing_size((10000, 100), 1024) == (2048, 64)  # the long side at most 2 x size
    assert xl_editor.processing_size((1, 1000), 1024) == (64, 2048)
    assert editor.processing_size((4032, 3024), 512) == (512, 384)
    inversion = xl_editor.invert(make_photo(160, 90), SOURCE, size=128)
    assert inversion.processed_size == (192, 128) and inversion.latent.shape == (1, 4, 16, 24)
    assert xl_editor.edit(inversion, [TARGET]).targets[0].size == (160, 90)  # output at the input's size
