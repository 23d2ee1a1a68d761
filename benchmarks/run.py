"""`make bench`: time invert + edit end to end and per stage, icdedit against the baseline.

Both run on the full-size SD1.5 architecture built from the configs in `benchmarks/configs`
(random weights, fixed seed, rank-64 LoRAs in the official PEFT layout): nothing is
downloaded. Each variant runs in its own process so that its peak memory (process RSS on the
CPU, `torch.cuda.max_memory_allocated` on a GPU) is its own.

    python -m benchmarks.run --device cpu --size 256            # what `make bench` runs
    python -m benchmarks.run --device cuda --dtype fp16 --size 512 --runs 20
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from icdedit.compiling import CompileOptions
from tests.full_size import ARCHS, random_bundle, random_components, random_spec

SOURCE, TARGET = "a photo of a cat sitting on the grass", "a photo of a dog sitting on the grass"
STAGES = ("text", "vae_encode", "forward", "reverse", "vae_decode")
VARIANTS = (
    "icdedit",
    "icdedit-graphs",
    "icdedit-graphs-cl",
    "icdedit-compile",
    "icdedit-graphs-compile",
    "icdedit-graphs-cl-compile",
    "icdedit-graphs-compile-autotune",
    "icdedit-lowrank",
    "icdedit-swap",
    "baseline",
)
DEFAULT_VARIANTS = {"cpu": "icdedit,baseline", "cuda": "icdedit,icdedit-graphs,icdedit-lowrank,baseline"}


def bench_editor(
    parts: dict,
    size: int,
    device,
    dtype,
    *,
    adapter_strategy: str = "auto",
    cuda_graphs: bool = False,
    compile: bool | CompileOptions = False,
    memory_format: torch.memory_format | None = None,
):
    """An icdedit Editor over the random components (consumed, see `random_bundle`)."""
    from icdedit.editor import Editor

    bundle = random_bundle(parts, size, device, dtype, adapter_strategy=adapter_strategy)
    if memory_format is torch.channels_last:  # before compiling: the kernels are chosen for the layout
        channels_last(bundle)
    return Editor(bundle, cuda_graphs=cuda_graphs, compile=compile)


def channels_last(bundle) -> None:
    """UNet and VAE convolutions in NHWC (the swapped-out forward weights too)."""
    torch.backends.cudnn.benchmark = True
    for module in (bundle.unet, bundle.vae):
        module.to(memory_format=torch.channels_last)
    other = getattr(bundle.adapters, "_other", {})
    for name, weight in other.items():
        if weight.ndim == 4:
            other[name] = weight.contiguous(memory_format=torch.channels_last)


def synthetic_photo(size: int):
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(12 * x * y)], -1)
    return Image.fromarray((rgb * 255).astype("uint8"), "RGB")


# -- timing ------------------------------------------------------------------------------------------
class Clock:
    def __init__(self, device: torch.device):
        self.device = device
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.times[name] = time.perf_counter() - start

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class EvalCounter:
    """Counts UNet evaluations and the rows in each (a forward pre-hook, nothing patched)."""

    def __init__(self, unets, adapter_strategy: str | None = None):
        self.rows: list[int] = []
        self.adapter_strategy = adapter_strategy  # reported beside the counts
        self.handles = [u.register_forward_pre_hook(self._hook) for u in unets]

    def _hook(self, module, args):
        self.rows.append(int(args[0].shape[0]))


def run_icdedit(parts: dict, args, device, dtype, clock: Clock, variant: str = "icdedit"):
    from icdedit.presets import load_preset

    options = set(variant.split("-")[1:])  # e.g. icdedit-graphs-cl-compile
    strategy = {"icdedit-lowrank": "low-rank", "icdedit-swap": "weight-swap"}.get(variant, "auto")
    editor = bench_editor(
        parts,
        args.size,
        device,
        dtype,
        adapter_strategy=strategy,
        cuda_graphs="graphs" in options,
        # autotune: Inductor times several kernels per operation (minutes more of compiling)
        compile=CompileOptions(mode="max-autotune-no-cudagraphs" if "autotune" in options else "default")
        if "compile" in options
        else False,
        # experiment: channels-last VAE too, with cuDNN autotuning (the UNet is channels-last on CUDA anyway)
        memory_format=torch.channels_last if "cl" in options else None,
    )
    bundle = editor.bundle
    image = synthetic_photo(args.size)
    settings = load_preset(bundle.spec.default_preset)  # the official settings of the family
    counter = EvalCounter([bundle.unet], adapter_strategy=bundle.adapters.strategy)

    def once():
        editor._prompts.clear()  # time the text encoder on every run
        with clock.stage("text"):
            editor.prompt_embeddings([SOURCE, TARGET])
        with clock.stage("vae_encode"):
            z0 = editor.start_latent(image, seed=0)
        with clock.stage("forward"):
            z_T = editor.invert_latent(z0, SOURCE, seed=0)
        with clock.stage("reverse"):  # the switch decodes the target row alone; P2P needs the source row too
            z, _ = editor.edit_latents(z_T, SOURCE, [TARGET], settings, with_source=False)
        with clock.stage("vae_decode"):
            editor.decode_latents(z[-1:])  # the edit; a source row is a reconstruction nobody reads

    return once, counter


def run_baseline_xl(parts: dict, args, device, dtype, clock: Clock):
    from benchmarks.baseline import BaselineXLEditor
    from icdedit.images import to_model_input

    baseline = BaselineXLEditor(
        teacher=parts["unet"],
        vae=parts["vae"],
        text_encoders=[parts["text_encoder"], parts["text_encoder_2"]],
        tokenizers=[parts["tokenizer"], parts["tokenizer_2"]],
        forward_lora=parts["forward"],
        reverse_lora=parts["reverse"],
        device=device,
        dtype=dtype,
    )
    parts.clear()
    pixels = to_model_input(synthetic_photo(args.size))
    counter = EvalCounter([baseline.forward["unet"], baseline.reverse["unet"]])
    spec = random_spec(args.size, "sdxl")

    def once():
        with clock.stage("text"):
            baseline.embed(baseline.forward, [SOURCE])
            baseline.embed(baseline.reverse, [SOURCE, TARGET])
        with clock.stage("vae_encode"):
            z0 = baseline.encode(pixels)
        with clock.stage("forward"):
            z_T = baseline.invert(z0, SOURCE, 0, list(spec.forward_timesteps))
        with clock.stage("reverse"):
            z = baseline.decode(z_T, SOURCE, TARGET, list(spec.reverse_timesteps), 7.0, 0.7)
        with clock.stage("vae_decode"):
            baseline.to_pixels(z)

    return once, counter


def run_baseline(parts: dict, args, device, dtype, clock: Clock):
    if "text_encoder_2" in parts:
        return run_baseline_xl(parts, args, device, dtype, clock)
    from benchmarks.baseline import BaselineEditor, OfficialStyleController
    from icdedit.images import to_model_input
    from icdedit.p2p.plan import build_control_plan, derive_all_edit_words
    from icdedit.presets import EditSettings

    baseline = BaselineEditor(
        teacher=parts["unet"],
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        forward_lora=parts["forward"],
        reverse_lora=parts["reverse"],
        device=device,
        dtype=dtype,
    )
    tokenizer = parts["tokenizer"]
    parts.clear()
    settings = EditSettings()
    words = derive_all_edit_words(SOURCE, [TARGET], settings.mode, settings.amplify)
    plan = build_control_plan(
        tokenizer,
        SOURCE,
        [TARGET],
        words,
        num_steps=4,
        cross_replace=settings.cross_replace,
        self_replace=settings.self_replace,
        blend_threshold=settings.blend_threshold,
    )
    pixels = to_model_input(synthetic_photo(args.size))
    counter = EvalCounter([baseline.forward["unet"], baseline.reverse["unet"]])
    latent = args.size // 8

    def controller():
        t = plan.targets[0]
        blend = torch.zeros(2, 77, device=device)
        blend[0, list(plan.source_blend_positions)] = 1
        blend[1, list(t.blend_positions)] = 1
        to = dict(device=device, dtype=dtype)
        return OfficialStyleController(
            mappers=[("replace", t.mapper.to(**to))],
            equalizers=[t.equalizer.to(**to)],
            cross_alpha=t.cross_alpha[:, None].to(**to),
            self_steps=plan.self_window,
            self_limit=(latent // 2) ** 2,
            blend_words=blend,
            blend_hw=(latent // 4, latent // 4),
            threshold=plan.blend_threshold,
            offset=2,
        )

    def once():
        with clock.stage("text"):
            baseline.context(baseline.forward, [SOURCE])
            baseline.context(baseline.reverse, [SOURCE, TARGET])
        with clock.stage("vae_encode"):
            z0 = baseline.encode(pixels)
        with clock.stage("forward"):
            z_T = baseline.invert(z0, SOURCE, 0, [19, 259, 519, 779])
        with clock.stage("reverse"):
            z = baseline.decode(z_T, [SOURCE, TARGET], controller(), [259, 519, 779, 999], 19.0, 0.8)
        with clock.stage("vae_decode"):
            baseline.to_pixels(z)

    return once, counter


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args) -> dict:
    """One variant in this process: build, warm up, time; print one JSON line."""
    from icdedit.loader import resolve_device, resolve_dtype

    torch.set_grad_enabled(False)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    started = time.perf_counter()
    parts = random_components(args.arch, device, args.seed, args.lora_rank)
    clock = Clock(device)
    if args.child == "baseline":
        once, counter = run_baseline(parts, args, device, dtype, clock)
    else:
        once, counter = run_icdedit(parts, args, device, dtype, clock, args.child)
    build_seconds = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(args.warmup):
        once()  # pays for CUDA graph capture and compilation, where a variant has them
    warmup_seconds = time.perf_counter() - started
    counter.rows.clear()
    runs = []
    for _ in range(args.runs):
        once()
        runs.append({**clock.times, "total": sum(clock.times[s] for s in STAGES)})
    evals_per_run = len(counter.rows) // max(args.runs, 1)
    return {
        "variant": args.child,
        "build_seconds": round(build_seconds, 2),
        "warmup_seconds": round(warmup_seconds, 2),
        "runs": runs,
        "unet_evals": evals_per_run,
        "rows_per_eval": counter.rows[:evals_per_run],
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss",
        "adapter_strategy": counter.adapter_strategy,
    }


def summarize(runs: list[dict]) -> dict:
    out = {}
    for key in (*STAGES, "total"):
        values = [r[key] for r in runs]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def environment(args) -> dict:
    import diffusers
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "cpu_count": torch.get_num_threads(),
        "device": args.device,
        "dtype": args.dtype,
        "size": args.size,
        "arch": args.arch,
        "runs": args.runs,
        "warmup": args.warmup,
        "lora_rank": args.lora_rank,
    }
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def table(results: dict) -> str:
    rows = [
        "| variant | " + " | ".join(STAGES) + " | total (median, min-max) | UNet evals x rows | peak memory |",
        "| --- |" + " --- |" * (len(STAGES) + 3),
    ]
    for name, r in results.items():
        s = r["summary"]
        stages = " | ".join(f"{s[k]['median'] * 1000:.0f} ms" for k in STAGES)
        total = f"{s['total']['median'] * 1000:.0f} ms ({s['total']['min'] * 1000:.0f}-{s['total']['max'] * 1000:.0f})"
        evals = f"{r['unet_evals']} x {'/'.join(map(str, sorted(set(r['rows_per_eval']))))}"
        rows.append(f"| {name} | {stages} | {total} | {evals} | {r['peak_memory_mb']:.0f} MiB |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (multiple of 64)")
    parser.add_argument("--arch", default="sd15", choices=ARCHS, help="sdxl: 1024 px is its own size")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--variants", default=None, help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    results = {}
    variants = (args.variants or DEFAULT_VARIANTS["cuda" if args.device.startswith("cuda") else "cpu"]).split(",")
    if args.arch == "sdxl" and args.device == "cpu" and not args.variants:
        variants.remove("baseline")  # three fp32 SDXL pipelines (~40 GB) do not fit a CPU machine like CI's
    for variant in variants:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.run",
            *(argv if argv is not None else sys.argv[1:]),
            "--child",
            variant,
        ]
        print(f"running {variant} ...", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["summary"] = summarize(result["runs"])
        results[variant] = result
    report = {"environment": environment(args), "results": results}
    if {"icdedit", "baseline"} <= set(results):
        ours, base = results["icdedit"], results["baseline"]
        report["speedup_total"] = base["summary"]["total"]["median"] / ours["summary"]["total"]["median"]
        report["memory_ratio"] = ours["peak_memory_mb"] / base["peak_memory_mb"]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"bench-{args.arch}-{args.device.replace(':', '')}-{args.size}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    text = table(results)
    if "speedup_total" in report:
        text += (
            f"\n\nicdedit vs baseline: {report['speedup_total']:.2f}x faster (median total), "
            f"peak memory {report['memory_ratio']:.2f}x"
        )
    (args.out / f"{stem}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
