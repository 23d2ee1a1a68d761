"""fp16/bf16 against fp32 on one device: the same random full-size model, invert + edit.

    python -m benchmarks.precision --device cuda --size 512

Prints one JSON line: for each low-precision dtype, the largest latent difference (absolute
and relative to the fp32 latent's scale), the PSNR between the decoded images, and whether
anything overflowed (NaN or inf).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from benchmarks.run import SOURCE, TARGET, bench_editor, synthetic_photo
from tests.full_size import ARCHS, random_components


def edit_once(args, dtype: torch.dtype):
    from icdedit.presets import load_preset

    device = torch.device(args.device)
    editor = bench_editor(random_components(args.arch, device, 0, 64), args.size, device, dtype)
    with torch.no_grad():
        z_T = editor.invert_latent(editor.start_latent(synthetic_photo(args.size), 0), SOURCE, 0)
        z, _ = editor.edit_latents(z_T, SOURCE, [TARGET], load_preset(editor.spec.default_preset))
        images = [np.asarray(i, dtype=np.float64) for i in editor.decode_latents(z)]
    return z_T.float().cpu(), z.float().cpu(), images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--dtypes", default="fp16,bf16")
    parser.add_argument("--arch", default="sd15", choices=ARCHS)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    ref_T, ref_z, ref_images = edit_once(args, torch.float32)
    report = {"device": args.device, "size": args.size}
    for name in args.dtypes.split(","):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[name]
        z_T, z, images = edit_once(args, dtype)
        mse = float(np.mean([(a - b) ** 2 for a, b in zip(images, ref_images)]))
        report[name] = {
            "finite": bool(torch.isfinite(z).all() and torch.isfinite(z_T).all()),
            "inverted_latent_max_abs_diff": float((z_T - ref_T).abs().max()),
            "final_latent_max_abs_diff": float((z - ref_z).abs().max()),
            "final_latent_rel_diff": float((z - ref_z).norm() / ref_z.norm()),
            "image_psnr_vs_fp32_db": math.inf if mse == 0 else 10 * math.log10(255**2 / mse),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
