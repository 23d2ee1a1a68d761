import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from icdedit.errors import ModelError, SettingsError
from icdedit.loader import load_model, load_teacher_state_dict, resolve_device, resolve_dtype
from icdedit.specs import load_spec

from .tolerance import Float32Error, assert_near_exact


def test_one_unet_with_guidance_embedding_and_teacher_weights(editor, tiny_spec):
    bundle = editor.bundle
    assert bundle.unet.config.time_cond_proj_dim == 512
    assert bundle.dtype == torch.float32 and bundle.device.type == "cpu"
    teacher = torch.load(tiny_spec.teacher, weights_only=True)
    params = dict(bundle.unet.named_parameters())
    # layers the LoRAs do not touch hold the teacher's weights exactly
    assert torch.equal(params["conv_in.weight"], teacher["conv_in.weight"])
    assert torch.equal(params["time_embedding.cond_proj.weight"], teacher["time_embedding.cond_proj.weight"])
    # the reverse LoRA is merged into the targeted layers
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(params[name], teacher[name])


def test_base_unet_weights_are_never_read(tiny_spec, tmp_path):
    spec_dir = tmp_path / "m"
    shutil.copytree(tiny_spec.path.parent, spec_dir)
    for f in (spec_dir / "base" / "unet").glob("*.safetensors"):
        f.unlink()  # only the config remains
    bundle = load_model(load_spec(spec_dir / "model.yaml"), device="cpu")
    assert bundle.unet.config.time_cond_proj_dim == 512


def test_safetensors_teacher_is_accepted(tiny_spec, tmp_path):
    spec_dir = tmp_path / "m"
    shutil.copytree(tiny_spec.path.parent, spec_dir)
    state = torch.load(spec_dir / "teacher.pt", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(spec_dir / "teacher.safetensors"))
    text = (spec_dir / "model.yaml").read_text().replace("teacher.pt", "teacher.safetensors")
    (spec_dir / "model.yaml").write_text(text)
    a = load_model(load_spec(spec_dir / "model.yaml"), device="cpu").unet.state_dict()
    b = load_model(tiny_spec, device="cpu").unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class Payload:
    def __reduce__(self):  # would run code if unpickled
        return (print, ("pwned",))


def test_teacher_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"conv_in.weight": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(ModelError, match="not a readable teacher"):
        load_teacher_state_dict(path)
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelError):
        load_teacher_state_dict(path)


def test_teacher_for_another_unet_is_refused(tiny_spec, tmp_path):
    spec_dir = tmp_path / "m"
    shutil.copytree(tiny_spec.path.parent, spec_dir)
    state = torch.load(spec_dir / "teacher.pt", weights_only=True)
    state.pop("conv_in.weight")
    torch.save(state, spec_dir / "teacher.pt")
    with pytest.raises(ModelError, match="does not fit the base UNet"):
        load_model(load_spec(spec_dir / "model.yaml"), device="cpu")


def test_missing_part_names_file_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("ICDEDIT_HOME", str(tmp_path))
    from icdedit.specs import resolve_model

    with pytest.raises(ModelError) as info:
        load_model(resolve_model("sd15-4step-v1"), device="cpu")
    assert str(tmp_path / "sd15_cfg_distill.pt") in info.value.message
    assert "storage.yandexcloud.net" in info.value.hint


def test_missing_base_folder_is_a_clear_error(tiny_spec, tmp_path):
    spec_dir = tmp_path / "m"
    shutil.copytree(tiny_spec.path.parent, spec_dir)
    shutil.rmtree(spec_dir / "base" / "vae")
    with pytest.raises(ModelError, match="cannot load vae"):
        load_model(load_spec(spec_dir / "model.yaml"), device="cpu")


def test_device_and_dtype_resolution():
    cpu = resolve_device("cpu")
    assert cpu.type == "cpu"
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("fp64", cpu) == torch.float64  # the reference precision
    with pytest.raises(SettingsError, match="fp8"):
        resolve_dtype("fp8", cpu)
    with pytest.raises(SettingsError, match="not a device|not supported"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="CUDA is not available"):
            resolve_device("cuda:0")
        assert resolve_device("auto").type in ("cpu", "mps")


def test_both_adapter_strategies_give_the_same_models(tiny_spec, editor64):
    """weight-swap (the CUDA default), hybrid (the CPU default) and low-rank are the same two models."""
    from icdedit.editor import Editor
    from icdedit.loader import assemble_bundle, build_teacher_unet
    from icdedit.lora import read_peft_lora
    from icdedit.schedule import NoiseSchedule

    from .helpers import make_photo

    results = []
    for strategy in ("low-rank", "weight-swap", "hybrid"):
        base = load_model(tiny_spec, device="cpu")
        bundle = assemble_bundle(
            tiny_spec,
            tokenizer=base.tokenizer,
            text_encoder=base.text_encoder,
            vae=base.vae,
            teacher=build_teacher_unet(tiny_spec),
            forward=read_peft_lora(tiny_spec.forward_lora, 8),
            reverse=read_peft_lora(tiny_spec.reverse_lora, 8),
            schedule=NoiseSchedule.scaled_linear(),
            device=torch.device("cpu"),
            dtype=torch.float32,
            adapter_strategy=strategy,
        )
        assert bundle.adapters.strategy == strategy
        editor = Editor(bundle)
        inversion = editor.invert(make_photo(64, 64), "a photo of a cat", seed=1)
        results.append((inversion.latent, editor.edit(inversion, ["a photo of a dog"]).latents))
    exact = editor64.invert(make_photo(64, 64), "a photo of a cat", seed=1)
    exact_edit = editor64.edit(exact, ["a photo of a dog"]).latents
    invert_error = Float32Error.measure(results[0][0], exact.latent)
    edit_error = Float32Error.measure(results[0][1], exact_edit)  # its start differs by the inversion's error
    for inversion, edited in results[1:]:
        assert_near_exact(inversion, exact.latent, invert_error, "inversion")
        assert_near_exact(edited, exact_edit, edit_error, "edit")
