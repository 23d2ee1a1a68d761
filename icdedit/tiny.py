"""A tiny random-weight iCD model with SD1.5's topology, saved in the official file formats.

It exists for tests and installation checks (`--model tiny`): every file goes through the
same loading code as the released checkpoints (diffusers base folder, teacher `.pt` state
dict with `time_cond_proj_dim=512`, PEFT-key LoRA `.safetensors` with non-zero A and B).
Its images are noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from .families import DEFAULT_FAMILY, FAMILIES
from .lora import LORA_KEY_PREFIX, is_lora_target

TINY_WORDS = (
    "a photo of the an and with on in cat dog pug bear lion tiger sitting standing grass "
    "red blue green car hat house tree man woman painting smiling beach snow"
).split()
TINY_RESOLUTION = 64
CROSS_ATTENTION_SHARPNESS = 40.0


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: printable bytes keep their character, others shift past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def tiny_tokenizer_files(directory: Path, words: tuple[str, ...] = TINY_WORDS) -> None:
    """Write a CLIP-style BPE vocabulary where `words` are single tokens and others split."""
    alphabet = list(_bytes_to_unicode().values())
    vocab: list[str] = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:  # merge left to right: "c a" -> "ca", "ca t</w>" -> "cat</w>"
            merge = f"{pieces[0]} {pieces[1]}"
            merged = pieces[0] + pieces[1]
            if merge not in merges:
                merges.append(merge)
            if merged not in vocab:
                vocab.append(merged)
            pieces = [merged] + pieces[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


TINY_XL_TEXT_WIDTH = 32  # both text encoders: the UNet's cross-attention width is their sum
TINY_XL_TIME_EMBED = 8


def _tiny_unet(time_cond_proj_dim: int | None, family: str = DEFAULT_FAMILY):
    from diffusers import UNet2DConditionModel

    if FAMILIES[family].pooled_text:  # SDXL's layout: no attention at the top level, deeper transformers below
        return UNet2DConditionModel(
            sample_size=TINY_RESOLUTION // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(16, 32, 32),
            layers_per_block=2,
            transformer_layers_per_block=(1, 1, 2),
            norm_num_groups=8,
            cross_attention_dim=2 * TINY_XL_TEXT_WIDTH,
            attention_head_dim=(2, 2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=TINY_XL_TIME_EMBED,
            projection_class_embeddings_input_dim=6 * TINY_XL_TIME_EMBED + TINY_XL_TEXT_WIDTH,
            time_cond_proj_dim=time_cond_proj_dim,
        )
    return UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=2,
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=2,  # diffusers reads this as the number of heads, as in SD1.5's config
        time_cond_proj_dim=time_cond_proj_dim,
    )


def _tiny_vae(family: str = DEFAULT_FAMILY):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_RESOLUTION,
        scaling_factor=FAMILIES[family].vae_scaling_factor,
        force_upcast=FAMILIES[family].vae_float32_under_fp16,
    )


def _tiny_text_encoder(vocab_size: int, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        projection_dim=TINY_XL_TEXT_WIDTH,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def random_peft_lora(unet: torch.nn.Module, rank: int, generator: torch.Generator, std: float = 0.05) -> dict:
    """PEFT-key LoRA tensors for every targeted layer of `unet`, A and B both non-zero."""
    tensors = {}
    for name, module in unet.named_modules():
        if not is_lora_target(name, module):
            continue
        if isinstance(module, torch.nn.Conv2d):
            a_shape = (rank, module.in_channels, *module.kernel_size)
            b_shape = (module.out_channels, rank, 1, 1)
        else:
            a_shape, b_shape = (rank, module.in_features), (module.out_features, rank)
        prefix = f"{LORA_KEY_PREFIX}{name}"
        tensors[f"{prefix}.lora_A.weight"] = torch.randn(a_shape, generator=generator) * std
        tensors[f"{prefix}.lora_B.weight"] = torch.randn(b_shape, generator=generator) * std
    return tensors


def build_tiny_model(
    directory: str | Path,
    *,
    family: str = DEFAULT_FAMILY,
    seed: int = 0,
    lora_rank: int = 4,
    forward_timesteps: tuple[int, ...] = (19, 259, 519, 779),
    reverse_timesteps: tuple[int, ...] = (259, 519, 779, 999),
    teacher_format: str = "pt",
) -> Path:
    """Write a complete tiny iCD model of `family` (a key of families.FAMILIES) under `directory`;
    return its model YAML. An SDXL base has two tokenizers and text encoders, the second with
    a projection (its pooled output conditions the UNet), as stabilityai's folder does."""
    from diffusers import DDPMScheduler, EulerDiscreteScheduler
    from transformers import CLIPTokenizer

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    traits = FAMILIES[family]
    directory = Path(directory)
    base = directory / "base"
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    tiny_tokenizer_files(base / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer", model_max_length=77)
    tokenizer.save_pretrained(base / "tokenizer")
    _tiny_text_encoder(len(tokenizer)).save_pretrained(base / "text_encoder")
    _tiny_vae(family).save_pretrained(base / "vae")
    # The base UNet (no guidance embedding) is saved like the real one's but never used by iCD.
    _tiny_unet(None, family).save_pretrained(base / "unet")
    betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    if traits.pooled_text:
        # stabilityai's second tokenizer pads with "!" instead of the end token
        CLIPTokenizer.from_pretrained(base / "tokenizer", model_max_length=77, pad_token="!").save_pretrained(
            base / "tokenizer_2"
        )
        _tiny_text_encoder(len(tokenizer), with_projection=True).save_pretrained(base / "text_encoder_2")
        EulerDiscreteScheduler(**betas).save_pretrained(base / "scheduler")
        pipeline = "StableDiffusionXLPipeline"
    else:
        DDPMScheduler(**betas).save_pretrained(base / "scheduler")
        pipeline = "StableDiffusionPipeline"
    (base / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))

    teacher = _tiny_unet(512, family)
    with torch.no_grad():
        for p in teacher.time_embedding.cond_proj.parameters():  # non-trivial, like a trained one
            p.normal_(0, 0.02, generator=generator)
        # Sharpen cross-attention: random init gives near-uniform maps, trained models give
        # peaked ones, and local blend is only testable on maps that vary over the image.
        for name, module in teacher.named_modules():
            if name.endswith("attn2.to_k"):
                module.weight.mul_(CROSS_ATTENTION_SHARPNESS)
    teacher_file = directory / f"teacher.{'pt' if teacher_format == 'pt' else 'safetensors'}"
    if teacher_format == "pt":
        torch.save(teacher.state_dict(), teacher_file)
    else:
        save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, teacher_file)
    stem = f"iCD-{traits.tiny_model}"
    fwd_name = f"{stem}-forward_" + "_".join(map(str, forward_timesteps)) + ".safetensors"
    rev_name = f"{stem}-reverse_" + "_".join(map(str, reverse_timesteps)) + ".safetensors"
    save_file(random_peft_lora(teacher, lora_rank, generator), directory / fwd_name)
    save_file(random_peft_lora(teacher, lora_rank, generator), directory / rev_name)

    topology = traits.label
    spec = {
        "name": traits.tiny_model,
        "description": (
            f"Tiny random-weight model with {topology}'s topology: checks an installation; its images are noise."
        ),
        "family": family,
        "base": "base",
        "teacher": teacher_file.name,
        "forward_lora": fwd_name,
        "reverse_lora": rev_name,
        "guidance_embed_dim": 512,
        "lora_alpha": 8,
        "start_timestep": forward_timesteps[0],
        "forward_timesteps": list(forward_timesteps),
        "reverse_timesteps": list(reverse_timesteps),
        "resolution": TINY_RESOLUTION,
        "random_weights": True,
    }
    yaml_path = directory / "model.yaml"
    yaml_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return yaml_path


def ensure_tiny_model(family: str = DEFAULT_FAMILY) -> Path:
    """The built-in tiny model of `family` under the weights folder, created on first use."""
    from .paths import weights_home

    folder = weights_home() / FAMILIES[family].tiny_model
    yaml_path = folder / "model.yaml"
    if yaml_path.is_file():
        return yaml_path
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        build_tiny_model(staging, family=family)
        try:
            staging.rename(folder)  # atomic: a half-built model is never seen as complete
        except OSError:
            if not yaml_path.is_file():  # lost no race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return yaml_path


def build_tiny_preview_decoder(directory: str | Path, seed: int = 0) -> Path:
    """A tiny random TAESD (diffusers' AutoencoderTiny) saved as the hub's folders are, for the
    preview decoder's tests: `directory` is what `$ICDEDIT_HOME/preview/<name>/` holds."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    model = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    model.save_pretrained(directory, safe_serialization=True)
    return Path(directory)
