"""Tiny random-weight evaluation models in the layouts `icdedit download` leaves: hub models as
`save_pretrained` writes them, LPIPS's SqueezeNet as torchvision's checkpoint (its key names).
Built by the tests; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def build_tiny_eval_models(home: Path, tokenizer_folder: Path) -> Path:
    """Every evaluation model under `home`/eval/<name>; returns `home`."""
    from transformers import (
        BitImageProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
        Dinov2Config,
        Dinov2Model,
        ViTConfig,
        ViTModel,
    )

    from icdedit.eval_networks import squeezenet_features

    torch.manual_seed(0)
    eval_home = home / "eval"
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    # DINO ViT-B/8's topology in small: 8-pixel patches at 224, a CLS token, qkv with bias
    ViTModel(ViTConfig(image_size=224, patch_size=8, qkv_bias=True, **small), add_pooling_layer=False).save_pretrained(
        eval_home / "dino-vitb8"
    )
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder)
    ids = dict(
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    text = dict(small, vocab_size=len(tokenizer), max_position_embeddings=77, **ids)
    clip = CLIPModel(
        CLIPConfig(text_config=text, vision_config=dict(small, image_size=224, patch_size=32), projection_dim=16)
    )
    clip.save_pretrained(eval_home / "clip-vit-large-patch14")
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(eval_home / "clip-vit-large-patch14")
    Dinov2Model(
        Dinov2Config(
            image_size=224, patch_size=14, mlp_ratio=2, **{k: v for k, v in small.items() if k != "intermediate_size"}
        )
    ).save_pretrained(eval_home / "dinov2-base")
    BitImageProcessor(
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True, **IMAGENET
    ).save_pretrained(eval_home / "dinov2-base")
    # torchvision's squeezenet1_1 checkpoint layout: features.* (and a classifier, unused by LPIPS)
    features = squeezenet_features()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.1.weight"] = torch.randn(1000, 512, 1, 1) * 0.01
    (eval_home / "lpips-squeeze" / "checkpoints").mkdir(parents=True)
    torch.save(state, eval_home / "lpips-squeeze" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth")
    return home
