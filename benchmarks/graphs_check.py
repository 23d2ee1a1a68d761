"""CUDA graphs (and, with --compile, compiled regions) against eager execution on the same
device: same model, same edits.

    python -m benchmarks.graphs_check --device cuda --size 512 [--compile]

The graphed editor captures on its first edit and replays on the next ones, including an edit
with other prompts of the same structure (the controller's buffers are reloaded) and one of
another structure (refine). Prints one JSON line with the largest latent differences.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.run import SOURCE, bench_editor, synthetic_photo
from tests.full_size import ARCHS, random_components


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--arch", default="sd15", choices=ARCHS)
    parser.add_argument("--compile", action="store_true", help="also compile the graphed editor's regions")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    from icdedit.editor import Editor
    from icdedit.loader import resolve_dtype
    from icdedit.presets import load_preset

    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    graphed = bench_editor(
        random_components(args.arch, device, 0, 64), args.size, device, dtype, cuda_graphs=True, compile=args.compile
    )
    # compiling changes the modules in place: the eager reference then needs its own copy (same seed)
    eager = (
        bench_editor(random_components(args.arch, device, 0, 64), args.size, device, dtype)
        if args.compile
        else Editor(graphed.bundle)
    )
    image = synthetic_photo(args.size)
    targets = [
        "a photo of a dog sitting on the grass",
        "a photo of a lion sitting on the grass",
        "a photo of a cat sitting on the snow",
        "a red photo of a cat sitting on the grass",
    ]
    report = {"device": args.device, "dtype": args.dtype, "size": args.size, "compile": args.compile, "edits": []}
    for target in targets + targets[:1]:
        a = eager.invert(image, SOURCE, seed=1)
        b = graphed.invert(image, SOURCE, seed=1)
        za = eager.edit(a, [target], load_preset(eager.spec.default_preset)).latents
        zb = graphed.edit(b, [target], load_preset(eager.spec.default_preset)).latents
        report["edits"].append(
            {
                "target": target,
                "inversion_max_abs_diff": float((a.latent - b.latent).abs().max()),
                "edit_max_abs_diff": float((za - zb).abs().max()),
                "finite": bool(torch.isfinite(zb).all()),
            }
        )
    report["graphs_captured"] = len(graphed._graphs._graphs)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
