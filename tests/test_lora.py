import pytest
import torch
from safetensors.torch import save_file

from icdedit.errors import ModelError
from icdedit.lora import (
    LORA_KEY_PREFIX,
    HybridSwitch,
    LoraFactors,
    LowRankSwitch,
    WeightSwapSwitch,
    forward_merged_weights,
    is_lora_target,
    merge_lora,
    read_peft_lora,
)

from .tolerance import rounding_tolerance


def test_linear_delta_is_scale_times_b_at_a():
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])  # r=2, in=3
    b = torch.tensor([[1.0, 0.0], [2.0, 1.0]])  # out=2
    delta = LoraFactors(a, b, 8 / 2).delta()
    assert torch.equal(delta, torch.tensor([[4.0, 8.0, 0.0], [8.0, 20.0, -4.0]]))


def test_conv_delta_equals_running_the_two_lora_convs():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, stride=2)
    a = torch.randn(4, 3, 3, 3)
    b = torch.randn(5, 4, 1, 1)
    x = torch.randn(2, 3, 9, 9)
    factors = LoraFactors(a, b, 8 / 4)
    via_convs = conv(x) + 2.0 * torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, a, stride=2, padding=1), b)
    with torch.no_grad():
        conv.weight += factors.delta()
    # 27 products per output (3 channels x 3 x 3), the merged weight a rank-4 sum per element
    assert torch.allclose(conv(x), via_convs, rtol=0, atol=rounding_tolerance(via_convs, 27 * 4 + 27))


def _write_lora(path, tensors):
    save_file({LORA_KEY_PREFIX + k: v for k, v in tensors.items()}, str(path))
    return path


def test_read_peft_lora_scales_by_alpha_over_rank(tmp_path):
    path = _write_lora(
        tmp_path / "l.safetensors", {"lin.lora_A.weight": torch.ones(4, 3), "lin.lora_B.weight": torch.ones(2, 4)}
    )
    factors = read_peft_lora(path, 8.0)
    assert set(factors) == {"lin"}
    assert factors["lin"].scale == 2.0


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"x.lora_A.weight": torch.ones(2, 2)}, "only lora_A"),
        ({"x.lora_A.weight": torch.ones(2, 2), "x.lora_B.weight": torch.ones(2, 3)}, "rank"),
        ({"x.lora_C.weight": torch.ones(2, 2)}, "unexpected key"),
    ],
)
def test_malformed_lora_files_are_refused(tmp_path, tensors, message):
    with pytest.raises(ModelError, match=message):
        read_peft_lora(_write_lora(tmp_path / "bad.safetensors", tensors), 8.0)


def test_keys_without_the_peft_prefix_are_refused(tmp_path):
    path = tmp_path / "kohya.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, str(path))
    with pytest.raises(ModelError, match="unet.base_model.model."):
        read_peft_lora(path, 8.0)


def test_not_a_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelError, match="not a readable LoRA"):
        read_peft_lora(path, 8.0)


def test_lora_for_another_architecture_is_refused(tmp_path):
    net = torch.nn.Sequential()
    net.add_module("to_q", torch.nn.Linear(3, 2))
    path = _write_lora(
        tmp_path / "l.safetensors", {"to_q.lora_A.weight": torch.ones(1, 5), "to_q.lora_B.weight": torch.ones(2, 1)}
    )
    with pytest.raises(ModelError, match="another base model"):
        merge_lora(net, read_peft_lora(path, 8.0), path)


def test_lora_targets_follow_the_official_list():
    lin, conv = torch.nn.Linear(2, 2), torch.nn.Conv2d(2, 2, 1)
    assert is_lora_target("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", lin)
    assert is_lora_target("mid_block.resnets.0.time_emb_proj", lin)
    assert is_lora_target("down_blocks.0.downsamplers.0.conv", conv)
    assert not is_lora_target("conv_in", conv)
    assert not is_lora_target("time_embedding.linear_1", lin)
    assert not is_lora_target("down_blocks.0.attentions.0.norm", torch.nn.GroupNorm(1, 2))


def _tiny_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("to_q", torch.nn.Linear(6, 6))
    net.add_module("act", torch.nn.Tanh())
    net.add_module("to_k", torch.nn.Linear(6, 6))
    return net


def _factors(seed, names=("to_q", "to_k")):
    g = torch.Generator().manual_seed(seed)
    return {n: LoraFactors(torch.randn(2, 6, generator=g), torch.randn(6, 2, generator=g), 4.0) for n in names}


@pytest.mark.parametrize("strategy", ["low-rank", "weight-swap", "hybrid"])
def test_adapter_switch_matches_separately_merged_models_and_never_drifts(strategy):
    fwd, rev = _factors(1, names=("to_q",)), _factors(2)  # the LoRAs need not cover the same layers
    x = torch.randn(3, 6)
    ref_fwd, ref_rev = _tiny_net(), _tiny_net()
    merge_lora(ref_fwd, fwd, "fwd")
    merge_lora(ref_rev, rev, "rev")
    net = _tiny_net()
    forward_weights = forward_merged_weights(net, fwd, rev, "fwd")
    merge_lora(net, rev, "rev")
    switch = {
        "low-rank": lambda: LowRankSwitch(net, fwd, rev),
        "weight-swap": lambda: WeightSwapSwitch(net, forward_weights),
        # to_q swapped, to_k (only the reverse LoRA's) corrected by a hook
        "hybrid": lambda: HybridSwitch(net, fwd, rev, {"to_q": forward_weights["to_q"]}),
    }[strategy]()
    with torch.no_grad():
        first_rev = net(x)
        with switch.use("forward"):
            first_fwd = net(x)
        # Linear(6) + LoRA of rank 2, tanh, Linear(6) + LoRA: about 2 x (6 + 2 + 2) operations
        # per output, weights and corrections rounded once more where they are merged
        for got, expected in ((first_fwd, ref_fwd(x)), (first_rev, ref_rev(x))):
            assert torch.allclose(got, expected, rtol=0, atol=rounding_tolerance(expected, 2 * (6 + 2 + 2) + 4))
        for _ in range(50):
            with switch.use("forward"):
                again_fwd = net(x)
            again_rev = net(x)
        assert torch.equal(again_fwd, first_fwd) and torch.equal(again_rev, first_rev)
    with pytest.raises(ValueError):
        with switch.use("sideways"):
            pass


def test_hybrid_swaps_the_layers_where_a_correction_costs_most():
    from icdedit.lora import correction_cost, swap_worthy_layers

    narrow, wide = torch.nn.Conv2d(320, 320, 3), torch.nn.Conv2d(1280, 1280, 3)
    assert correction_cost(narrow, 128) == pytest.approx((128 * 320 * 9 + 320 * 128) / (320 * 320 * 9))
    assert correction_cost(narrow, 128) > 0.4 > 0.12 > correction_cost(wide, 128)
    net = torch.nn.Module()
    net.add_module("narrow", narrow)
    net.add_module("wide", wide)
    g = torch.Generator().manual_seed(0)

    def factors(layer):
        return LoraFactors(
            torch.randn(64, layer.in_channels, 3, 3, generator=g),
            torch.randn(layer.out_channels, 64, 1, 1, generator=g),
            0.1,
        )

    fwd = {"narrow": factors(narrow), "wide": factors(wide)}
    assert swap_worthy_layers(net, fwd, fwd) == {"narrow"}
