"""The captioner's cost on this machine, measured: a random-weight BLIP of BLIP large's sizes
(ViT-L/16 at 384 px, BERT-base text decoder: Salesforce/blip-image-captioning-large's config)
saved to a temporary folder; its size on disk, load time, and the time to caption one 384 px
photo with icdedit's decoding settings. Random weights decode to arbitrary tokens until the
length limit, so the caption time is the worst case (30 new tokens, 3 beams).

    python -m benchmarks.captioner_size
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def build_blip_large(folder: Path) -> None:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
    vision.update(image_size=384, patch_size=16)
    text = dict(vocab_size=30524, hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
    text.update(encoder_hidden_size=1024)  # cross-attention reads the ViT-L features
    torch.manual_seed(0)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).save_pretrained(folder)


def main() -> None:
    import torch

    from icdedit.captions import CAPTION_SETTINGS

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "blip-large"
        build_blip_large(folder)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        from transformers import BlipForConditionalGeneration

        started = time.perf_counter()
        model = BlipForConditionalGeneration.from_pretrained(folder).eval()
        loaded = time.perf_counter() - started
        rng = np.random.default_rng(0)
        photo = Image.fromarray((rng.random((384, 384, 3)) * 255).astype(np.uint8))
        pixels = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        prefix = torch.tensor([[30522, 1037, 6302, 1997]])  # [DEC] a photo of, in BERT-base's vocabulary
        settings = {k: v for k, v in CAPTION_SETTINGS.items() if k != "prefix"}
        started = time.perf_counter()
        with torch.inference_mode():
            ids = model.generate(pixel_values=pixels, input_ids=prefix, **settings)
        captioned = time.perf_counter() - started
        print(
            f"size on disk {size / 1e9:.2f} GB; load {loaded:.1f} s; one 384 px caption {captioned:.1f} s "
            f"({ids.shape[1]} tokens, {torch.get_num_threads()} threads)"
        )


if __name__ == "__main__":
    main()
