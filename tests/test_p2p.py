"""Prompt-to-Prompt on the tiny model: icdedit's fused processors against the explicit,
official-style reference, plus the properties the spec promises."""

import pytest
import torch

from icdedit import engine
from icdedit.editor import Inversion, telling_steps
from icdedit.p2p import control as control_module
from icdedit.p2p.control import AttentionController, LayerInfo, attention_control
from icdedit.presets import EditSettings, load_preset

from . import reference
from .helpers import P2P_SIZE, XL_SOURCE, in_float64, make_photo, official_controller, plan_for, probe
from .reference import embed
from .tolerance import Float32Error, assert_near_exact, assert_same_mathematics, rounding_tolerance

SIZE = P2P_SIZE  # latent 32x32: the local-blend level is 8x8, so masks are not trivially full


@pytest.fixture(scope="module")
def inversion(editor):
    return editor.invert(make_photo(SIZE, SIZE, seed=5), "a photo of a cat on the grass", seed=3, size=SIZE)


def reference_edit(ref, inversion, source, targets, settings, words, batch4=False):
    """The edit as the official code runs it, with `official_controller`'s control."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    n = len(targets)
    latent_size = tuple(inversion.latent.shape[2:])
    offset = (1 + n) if batch4 else 0
    ctrl = official_controller(ref["tok"], source, targets, settings, words, latent_size, offset=offset)
    unet = ref["rev"]
    reference.install_explicit(unet, ctrl)
    emb = embed(ref, [source, *targets])
    if batch4:
        emb = torch.cat([embed(ref, [""] * (1 + n)), emb])
    acp = reference.alphas_cumprod()
    z = inversion.latent.to(unet.dtype).expand(1 + n, -1, -1, -1)
    try:
        ts = [999, 779, 519, 259]
        for k, (t, s) in enumerate(zip(ts, ts[1:] + [0])):
            ctrl.begin_step(k)
            rows_w = [0.0] + [reference.w_of_t(t, settings.guidance, settings.tau)] * n
            x = torch.cat([z, z]) if batch4 else z
            ws = ([0.0] * (1 + n) + rows_w) if batch4 else rows_w
            with torch.no_grad():
                eps = unet(
                    x, t, encoder_hidden_states=emb, timestep_cond=reference.w_embedding(ws).to(unet.dtype)
                ).sample
            eps = eps[1 + n :] if batch4 else eps
            a_t, s_t = acp[t].sqrt(), (1 - acp[t]).sqrt()
            x0 = (z - s_t * eps) / a_t
            z = x0 if s == 0 else acp[s].sqrt() * x0 + (1 - acp[s]).sqrt() * eps
            z = ctrl.step_callback(z)
    finally:
        unet.set_attn_processor(AttnProcessor2_0())
    return z


def reference_runs(ref, ref64, inversion, source, targets, settings, words, batch4=False):
    """The reference edit in float32 and in float64, and its float32 error (tests/tolerance.py)."""
    float32 = reference_edit(ref, inversion, source, targets, settings, words, batch4)
    exact = reference_edit(ref64, inversion, source, targets, settings, words, batch4)
    return exact, Float32Error.measure(float32, exact)


PARTIAL_MASK = {"blend_threshold": 0.6}  # on the tiny model's maps, a mask that covers part of the image
CASES = [
    (
        "replace, derived amplify and blend",
        "a photo of a cat on the grass",
        ["a photo of a dog on the grass"],
        {},
        PARTIAL_MASK,
    ),
    (
        "replace, multi-token word",
        "a photo of a cat on the grass",
        ["a photo of a raccoon on the grass"],
        {},
        PARTIAL_MASK,
    ),
    ("refine, inserted words", "a photo of a cat on the grass", ["a red photo of a cat sitting on the snow"], {}, {}),
    (
        "refine with explicit blend",
        "a photo of a cat on the grass",
        ["a photo of a tiger cat on the grass"],
        {"blend": [("cat", "tiger")]},
        PARTIAL_MASK,
    ),
    (
        "two targets",
        "a photo of a cat on the grass",
        ["a photo of a dog on the grass", "a photo of a cat on the snow"],
        {},
        {"cross_replace": 0.6, "self_replace": 1.0, **PARTIAL_MASK},
    ),
]


@pytest.mark.parametrize("label, source, targets, words, overrides", CASES, ids=[c[0] for c in CASES])
def test_fused_processors_equal_the_explicit_reference(
    editor, editor64, ref, ref64, inversion, label, source, targets, words, overrides
):
    settings = EditSettings().with_overrides(**overrides)
    edit_words, plan = plan_for(editor, source, targets, settings, **words)
    exact, error = reference_runs(ref, ref64, inversion, source, targets, settings, edit_words)
    ours64 = editor64.edit(in_float64(inversion), targets, settings, source=source, **words).latents
    assert_same_mathematics(ours64, exact, error, label)
    result = editor.edit(inversion, targets, settings, source=source, **words)
    assert_near_exact(result.latents, exact, error, label)
    if plan.blends:  # local blend ran: some latent positions are row 0's exactly, others edited
        same = result.latents[1] == result.latents[0]
        assert same.any() and not same.all()


def test_batch_of_two_equals_batch_of_four_without_unconditional_rows(editor, ref, ref64, inversion):
    source, targets = "a photo of a cat on the grass", ["a photo of a dog on the grass"]
    settings = EditSettings()
    edit_words, plan = plan_for(editor, source, targets, settings)
    batch2 = editor.edit(inversion, targets, settings, source=source).latents
    # icdedit's own controller on the official batch of 4 (uncond src, uncond tgt, src, tgt)
    controller = AttentionController(plan, tuple(inversion.latent.shape[2:]), editor.device, torch.float32)
    w = lambda t: settings.guidance if t / 1000 <= settings.tau else 0.0  # noqa: E731
    emb = editor.prompt_embeddings(["", "", source, *targets])
    eps4 = telling_steps(editor.denoiser(emb, lambda t: [0.0, 0.0, 0.0, w(t)], controller=controller), controller)
    z = inversion.latent.expand(2, -1, -1, -1)
    with editor.bundle.adapters.use("reverse"), attention_control(editor.bundle.unet, controller):
        batch4 = engine.decode(
            lambda x, t, k: eps4(torch.cat([x, x]), t, k)[2:],
            z,
            editor.bundle.plan,
            editor.bundle.schedule,
            after_step=controller.after_step,
        )
    # the explicit reference run the official way, batch of 4, in float32 and float64
    exact, error = reference_runs(ref, ref64, inversion, source, targets, settings, edit_words, batch4=True)
    assert_near_exact(batch4, exact, error, "icdedit's batch of 4")
    assert_near_exact(batch2, exact, error, "icdedit's batch of 2")


# -- the same properties on both families, each on its own inputs: its models, photo and prompt, and
# its settings (SD1.5: the default preset; SDXL: xl-default with Prompt-to-Prompt) ------------------
FAMILIES = {
    "sd15": {
        "models": ("editor", "editor64", "inversion"),
        "prompt": "a photo of a cat on the grass",
        "settings": lambda **values: EditSettings(**values),
    },
    "sdxl": {
        "models": ("xl_editor", "xl_editor64", "xl_inversion"),
        "prompt": XL_SOURCE,
        "settings": lambda **values: load_preset("xl-default").with_overrides(method="p2p", **values),
    },
}


@pytest.mark.parametrize("family, mode", [("sd15", "replace"), ("sd15", "refine"), ("sdxl", None)])
def test_identical_prompts_leave_row_one_equal_to_row_zero(request, family, mode):
    """Both rows carry the same inputs, so they are the same mathematics; not bit-equal, since
    a matrix product may round two rows of one batch differently (MKL's AVX2 branch does).
    (SDXL: the preset's mode, auto.)"""
    editor, editor64, inversion = map(request.getfixturevalue, FAMILIES[family]["models"])
    prompt = FAMILIES[family]["prompt"]
    modes = {} if mode is None else {"mode": mode}
    settings = FAMILIES[family]["settings"](guidance=0.0, **modes, cross_replace=1.0, self_replace=1.0)
    result = editor.edit(inversion, [prompt], settings)
    exact = editor64.edit(in_float64(inversion), [prompt], settings).latents
    error = Float32Error.measure(result.latents[:1], exact[:1])
    assert_same_mathematics(exact[1], exact[0], error, "float64 row 1")
    assert_near_exact(result.latents[1], exact[0], error, "row 1")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_reweight_scales_exactly_the_chosen_columns_in_controlled_steps_only(request, family):
    editor = request.getfixturevalue(FAMILIES[family]["models"][0])
    prompt = FAMILIES[family]["prompt"]
    settings = FAMILIES[family]["settings"](cross_replace=0.3)  # N = 4: only step 0 is controlled
    cat = 5  # token position of 'cat': start token, a, photo, of, a, cat
    out, own = probe(editor, prompt, prompt, settings, [("cat", 3.0)], step=0)
    # q.k (8 products), a softmax over 77 keys, times 3 and the identity values: a short chain
    tolerance = rounding_tolerance(3 * own, 8 + 77 + 2)
    assert torch.allclose(out[0], own[0], rtol=0, atol=tolerance)  # row 0 untouched
    expected = own[0].clone()  # identity mapper: row 1 takes row 0's map, reweighted
    expected[..., cat] *= 3.0
    assert torch.allclose(out[1], expected, rtol=0, atol=tolerance)
    others = [c for c in range(77) if c != cat]
    assert torch.allclose(out[1][..., others], own[0][..., others], rtol=0, atol=tolerance)
    out_late, own_late = probe(editor, prompt, prompt, settings, [("cat", 3.0)], step=2)
    assert torch.allclose(out_late, own_late, rtol=0, atol=tolerance)  # outside the window: no control


def test_local_blend_keeps_row_zero_exactly_outside_the_mask(editor, inversion):
    """Exact: outside the mask the blend computes z0 + 0 * (z1 - z0), which is z0 to the bit."""
    settings = EditSettings(blend_threshold=0.6)
    result = editor.edit(inversion, ["a photo of a dog on the grass"], settings, blend=[("cat", "dog")])
    same = result.latents[1] == result.latents[0]
    assert same.any() and not same.all()
    # the mask is spatial: a position is kept in every channel or in none
    assert torch.equal(same.all(dim=0), same.any(dim=0))


def test_without_blend_targets_are_independent_rows(editor, editor64, inversion):
    settings = EditSettings()
    a, b = "a photo of a dog on the grass", "a photo of a cat on the snow"
    exact = editor64.edit(in_float64(inversion), [a, b], settings, no_blend=True).latents
    both = editor.edit(inversion, [a, b], settings, no_blend=True).latents
    error = Float32Error.measure(both, exact)
    only_a = editor.edit(inversion, [a], settings, no_blend=True).latents
    only_b = editor.edit(inversion, [b], settings, no_blend=True).latents
    # equal up to float32 round-off of different batch sizes
    assert_near_exact(only_a, exact[:2], error, "first target alone")
    assert_near_exact(only_b[1], exact[2], error, "second target alone")


def test_explicit_maps_only_where_controlled_or_read(editor, inversion, monkeypatch):
    calls = []
    real = control_module.attention_probs

    def counting(q, k, scale):
        calls.append(q.shape[2])
        return real(q, k, scale)

    monkeypatch.setattr(control_module, "attention_probs", counting)
    cross_layers = sum(1 for n, m in editor.bundle.unet.named_modules() if getattr(m, "is_cross_attention", False))
    editor.edit(inversion, ["a photo of a dog on the grass"], EditSettings(cross_replace=0.3), no_blend=True)
    assert len(calls) == cross_layers  # step 0 only, and never in self-attention
    calls.clear()
    editor.edit(inversion, ["a photo of a dog on the grass"], EditSettings(cross_replace=0.3))
    blend_layers = 5  # the 1/32-of-the-image level: 2 down + 3 up (SD1.5 topology)
    assert len(calls) == cross_layers + 3 * blend_layers
    assert set(calls[cross_layers:]) == {(SIZE // 32) ** 2}


def test_processors_are_restored_after_an_edit(editor, inversion):
    before = {k: type(v) for k, v in editor.bundle.unet.attn_processors.items()}
    editor.edit(inversion, ["a photo of a dog on the grass"], EditSettings())
    assert {k: type(v) for k, v in editor.bundle.unet.attn_processors.items()} == before


def test_latent_inversion_round_trip_is_deterministic(editor):
    image = make_photo(64, 64, seed=9)
    a = editor.invert(image, "a cat", seed=11)
    b = editor.invert(image, "a cat", seed=11)
    c = editor.invert(image, "a cat", seed=12)
    assert torch.equal(a.latent, b.latent) and not torch.equal(a.latent, c.latent)
    assert isinstance(a, Inversion) and a.processed_size == (64, 64)


def test_graph_bookkeeping_reuses_controllers_without_changing_results(editor, editor64, inversion):
    """The CUDA-graph path keeps one controller per control structure and loads each new plan
    into it; off CUDA it runs eagerly. Not exact: it copies every input into its own static
    buffers, and MKL's reproducible branches (MKL_CBWR=COMPATIBLE) round differently on other
    buffers, so its results lie within float32 error of the float64 edit, like the plain path's."""
    from icdedit.editor import Editor

    graphed = Editor(editor.bundle, cuda_graphs=True)
    settings = EditSettings(blend_threshold=0.6)
    edits = [
        ["a photo of a dog on the grass"],
        ["a photo of a lion on the grass"],
        ["a red photo of a cat on the grass"],
    ]
    for targets in edits + edits[:1]:  # the same structure twice in a row, then a refine, then back
        exact = editor64.edit(in_float64(inversion), targets, settings).latents
        error = Float32Error.measure(editor.edit(inversion, targets, settings).latents, exact)
        assert_near_exact(graphed.edit(inversion, targets, settings).latents, exact, error, str(targets))
    assert len(graphed._graphs._controllers) == 2  # replace and refine structures
    photo = make_photo(64, 64, seed=2)
    exact = editor64.invert(photo, "a cat", seed=4).latent
    error = Float32Error.measure(editor.invert(photo, "a cat", seed=4).latent, exact)
    assert_near_exact(graphed.invert(photo, "a cat", seed=4).latent, exact, error, "inversion")
    # graphs hold the weights they were captured with: each is keyed by the adapter active then
    assert {key[0] for key in graphed._graphs._graphs} == {"forward", "reverse"}


def test_several_edits_in_one_batch_equal_each_edit_alone(editor, editor64, inversion):
    from icdedit.editor import EditJob

    other = editor.invert(make_photo(SIZE, SIZE, seed=8), "a photo of a dog on the snow", seed=5, size=SIZE)
    jobs = [
        EditJob(inversion, ["a photo of a dog on the grass"], EditSettings(blend_threshold=0.6)),
        EditJob(
            other,
            ["a red photo of a dog on the snow", "a photo of a bear on the snow"],
            EditSettings(guidance=7, cross_replace=0.6),
            amplify=[("bear", 2.0)],
        ),
        EditJob(inversion, ["a photo of a cat on the snow"], EditSettings(), blend=[("grass", "snow")]),
    ]
    together = editor.edit_many(jobs)
    for job, result in zip(jobs, together):
        alone = editor.edit(job.inversion, job.targets, job.settings, amplify=job.amplify, blend=job.blend)
        exact = editor64.edit(
            in_float64(job.inversion), job.targets, job.settings, amplify=job.amplify, blend=job.blend
        ).latents
        assert_near_exact(result.latents, exact, Float32Error.measure(alone.latents, exact), f"job {job.targets}")
        assert result.words == alone.words and len(result.targets) == len(job.targets)


def test_inverting_several_photos_together_equals_one_by_one(editor, editor64):
    images = [make_photo(64, 64, seed=s) for s in (1, 2, 3)]
    prompts, seeds = ["a cat", "a dog", "a photo of a cat"], [0, 7, 7]
    together = editor.invert_many(images, prompts, seeds)
    for image, prompt, seed, inv in zip(images, prompts, seeds, together):
        exact = editor64.invert(image, prompt, seed).latent
        error = Float32Error.measure(editor.invert(image, prompt, seed).latent, exact)
        assert_near_exact(inv.latent, exact, error, prompt)  # batch round-off
        assert inv.seed == seed
    with pytest.raises(ValueError, match="processing size"):
        editor.invert_many([make_photo(64, 64), make_photo(128, 64)], ["a", "b"], [0, 0], size=256)


def test_large_images_use_the_tiled_vae_and_keep_their_size(editor):
    image = make_photo(600, 400, seed=3)
    inversion = editor.invert(image, "a photo of a cat", seed=0, size=512)  # 8x the tiny model's 64 px
    assert editor.bundle.vae.use_tiling and inversion.latent.shape == (1, 4, 40, 64)  # 512x320 processed
    result = editor.edit(inversion, ["a photo of a dog"])
    assert result.targets[0].size == (600, 400)
    editor.invert(make_photo(64, 64), "a cat", seed=0)
    assert not editor.bundle.vae.use_tiling  # back to untiled at the model's own size


def test_controller_snapshot_undoes_warm_up_runs(editor):
    """What CUDA-graph capture relies on: at the start of a step, a snapshot; two warm-ups and
    the capture run the step's Python three times; restoring leaves the blend maps of the
    steps before, for the replay that follows."""
    settings = EditSettings()
    _, plan = plan_for(editor, "a photo of a cat", ["a photo of a dog"], settings)
    controller = AttentionController(plan, (8, 8), torch.device("cpu"), torch.float32)
    layer = LayerInfo("down_blocks.2.attentions.0.transformer_blocks.0.attn2", "down", True)
    q, k, v = torch.randn(2, 2, 4, 8), torch.randn(2, 2, 77, 8), torch.randn(2, 2, 77, 8)
    controller.begin_step(0)
    controller.attend(layer, q, k, v, 8**-0.5)  # an earlier step's maps
    before = controller._blend_sum.clone()
    controller.begin_step(1)
    snapshot = controller.snapshot()
    for _ in range(3):
        controller.attend(layer, q, k, v, 8**-0.5)
    controller.restore(snapshot)
    assert torch.equal(controller._blend_sum, before)


def test_the_official_replace_mapper_defect_is_the_one_deviation(editor):
    """After the last changed word the official mapper reads source position j for target
    position j; with 'raccoon' six tokens and 'cat' one, every later token then reads the wrong
    source token. icdedit keeps them aligned (docs/numerics.md section 6): its mapper is the
    official one without that defect, and differs from the official one exactly there."""
    from .official_plan import replacement_mapper

    source, target = "a photo of a cat on the grass", "a photo of a raccoon on the grass"
    _, plan = plan_for(editor, source, [target], EditSettings())
    fixed = replacement_mapper(editor.tokenizer, source, target, official_defect=False)
    official = replacement_mapper(editor.tokenizer, source, target, official_defect=True)
    assert torch.equal(plan.targets[0].mapper, fixed)
    changed_columns = (fixed != official).any(dim=0).nonzero().flatten().tolist()
    assert changed_columns and min(changed_columns) == 5 + 6  # the target tokens after 'raccoon'
