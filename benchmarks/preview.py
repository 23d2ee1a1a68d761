"""The preview decoder against the VAE's: decode time at one size, same device, random weights
with the real architectures (TAESD's default AutoencoderTiny, the SD1.5 or SDXL VAE).

    python -m benchmarks.preview --device cpu --size 512 --runs 3

Prints one JSON line with the median decode times and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from tests.full_size import ARCHITECTURES


def median_seconds(decode, z: torch.Tensor, runs: int, device: torch.device) -> float:
    times = []
    for _ in range(runs + 1):  # the first run warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        decode(z)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--arch", default="sd15", choices=("sd15", "sdxl"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    vae_dtype = torch.float32 if args.arch == "sdxl" else dtype  # SDXL's VAE stays float32 (docs/numerics.md)
    config = json.loads((ARCHITECTURES / f"{args.arch}_vae.json").read_text())
    vae = AutoencoderKL(**config).to(device, vae_dtype).eval()
    preview = AutoencoderTiny().decoder.to(device, dtype).eval()
    z = torch.randn(1, 4, args.size // 8, args.size // 8, device=device)
    report = {"device": args.device, "dtype": args.dtype, "size": args.size, "arch": args.arch}
    report["vae_decode_s"] = median_seconds(lambda x: vae.decode(x.to(vae_dtype)).sample, z, args.runs, device)
    report["preview_decode_s"] = median_seconds(lambda x: preview(x.to(dtype)), z, args.runs, device)
    report["speedup"] = report["vae_decode_s"] / report["preview_decode_s"]
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
