"""The forward/reverse adapter switch strategies, timed on inversion (the forward model).

    python -m benchmarks.adapters --device cpu --size 256 --strategy hybrid

One strategy per process (run it once per strategy), so that each peak memory is its own.
Prints one JSON line: the seconds of each timed 4-step inversion and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.run import SOURCE, bench_editor, peak_memory_mb
from tests.full_size import random_components


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--arch", default="sd15")
    parser.add_argument("--strategy", default="hybrid", choices=["weight-swap", "hybrid", "low-rank"])
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    from icdedit.loader import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    editor = bench_editor(
        random_components(args.arch, device, 0, 64), args.size, device, dtype, adapter_strategy=args.strategy
    )
    z0 = torch.randn(1, 4, args.size // 8, args.size // 8, generator=torch.Generator().manual_seed(0)).to(device)
    editor.invert_latent(z0, SOURCE, 0)  # warm-up
    seconds = []
    for _ in range(args.runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        editor.invert_latent(z0, SOURCE, 0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(round(time.perf_counter() - started, 3))
    swapped = getattr(editor.bundle.adapters, "swapped", None)
    print(
        json.dumps(
            {
                "strategy": args.strategy,
                "device": args.device,
                "size": args.size,
                "invert_seconds": seconds,
                "swapped_layers": None if swapped is None else len(swapped),
                "peak_memory_mb": round(peak_memory_mb(device), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
