"""Opt-in `torch.compile` of the networks, in regions that attention control never enters.

Prompt-to-Prompt changes, step by step, what the attention layers do (see `p2p/control.py`):
a compiled graph that traced through them would guard on the controller's Python state and
recompile at every step, or bake in one step's decisions. So only the *attention-free*
parts of the UNet are compiled, each as its own region: the ResNet blocks (group norm, SiLU,
convolutions and the residual fused), the feed-forward GEGLU of each transformer block, the
norms and projections around attention, the up/down samplers and the time embedding. The
attention layers stay eager with their processors, whatever those are (plain fused SDPA,
controlled, xformers). The VAE's encoder and decoder carry no control and are compiled whole.

Regions are compiled with `nn.Module.compile`, so parameter names, state dicts and hooks are
unchanged: the low-rank forward-model hooks are traced into the regions (one graph per
active model), and the weight-swap switch replaces tensors that the compiled code reads as
inputs. Each region is specialised to its shapes (`dynamic=False`): an edit repeats the same
shapes many times, which is when compiling pays.

Many regions share one piece of Python (every ResNet block runs `ResnetBlock2D.forward`), and
dynamo counts the compiled variants of a function against `recompile_limit` (8 by default):
a UNet needs a few dozen. `compile_limits()` raises the limits only while our networks run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.models.attention_processor import Attention

from .errors import SettingsError, first_line

log = logging.getLogger(__name__)

# variants of one function (shapes x active model x ...), and of all functions together
RECOMPILE_LIMIT = 256
ACCUMULATED_RECOMPILE_LIMIT = 4096
# Modes that would capture CUDA graphs inside regions are refused: they assume fixed weight
# addresses, which the weight-swap adapter switch changes; `Editor(cuda_graphs=True)` graphs
# the whole UNet instead, compiled regions included.
MODES = ("default", "max-autotune-no-cudagraphs")
CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


@dataclass(frozen=True)
class CompileOptions:
    backend: str | Callable = "inductor"  # or any torch.compile backend ("eager": trace only, no code generation)
    mode: str = "default"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"compile mode {self.mode!r} is not supported; use one of {', '.join(MODES)}")


def _contains_attention(module: torch.nn.Module) -> bool:
    return any(isinstance(m, Attention) for m in module.modules())


def attention_free_regions(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The largest called submodules of `module` that hold no attention layer.

    Attention layers are not entered (their projections run inside the processor). Module
    lists are looked into, not compiled: nobody calls a list. Single layers (a Linear, a
    GroupNorm, an activation) are left out: alone they are one kernel already, and a compiled
    call would only add its guard checks."""
    regions = []
    for child in module.children():
        if isinstance(child, Attention):
            continue
        if isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict)) or _contains_attention(child):
            regions += attention_free_regions(child)
        elif any(True for _ in child.children()):
            regions.append(child)
    return regions


def compile_models(unet: torch.nn.Module, vae: torch.nn.Module, options: CompileOptions = CompileOptions()) -> int:
    """Compile the UNet's attention-free regions and the VAE's encoder and decoder in place.

    Compilation itself happens on first use of each shape; returns the number of regions."""
    regions = attention_free_regions(unet)
    regions += [part for part in (getattr(vae, "encoder", None), getattr(vae, "decoder", None)) if part is not None]
    for region in regions:
        region.compile(backend=options.backend, mode=None if options.mode == "default" else options.mode, dynamic=False)
    log.info("compiled %d regions with %s (%s)", len(regions), options.backend, options.mode)
    return len(regions)


@contextmanager
def compile_limits() -> Iterator[None]:
    """While our networks run: room for every region's shape variants (see the module doc),
    and guards on module hooks."""
    config = torch._dynamo.config
    names = ("recompile_limit", "accumulated_recompile_limit")  # torch >= 2.6; before: *cache_size_limit
    if not hasattr(config, names[0]):
        names = ("cache_size_limit", "accumulated_cache_size_limit")
    limits = dict(zip(names, (RECOMPILE_LIMIT, ACCUMULATED_RECOMPILE_LIMIT)))
    # Dynamo assumes by default that module hooks never change after compiling, and so would
    # run a region traced without the low-rank forward-model hooks (another Editor's, with the
    # weight-swap switch) on a UNet that has them: guard on the hooks instead.
    if hasattr(config, "skip_nnmodule_hook_guards"):
        limits["skip_nnmodule_hook_guards"] = False
    with config.patch(**limits):
        yield


def check_toolchain(device: torch.device, options: CompileOptions = CompileOptions()) -> None:
    """Compile one small function now, so that a missing compiler (a C++ compiler on the CPU,
    Triton on a GPU) is one clear error before any work, not a failure of every item."""
    try:
        probe = torch.compile(lambda x: torch.nn.functional.silu(x) * 2, backend=options.backend, dynamic=False)
        probe(torch.ones(8, device=device))
    except Exception as exc:  # the backends raise many types; all mean the same here
        reason = first_line(exc)
        raise SettingsError(
            f"--compile: torch.compile does not work on {device} here ({reason[:200]})",
            "install what the message names (a C++ compiler on the CPU, Triton on a GPU), or run without --compile",
        ) from exc


def keep_compiled_code(folder: Path) -> Path | None:
    """Have Inductor keep what it compiles (its graphs, autotuning choices and Triton kernels)
    in `folder`, so that the next run loads it in seconds instead of compiling for minutes.
    torch's own default is a folder under /tmp, which a reboot empties. A folder the user named
    in TORCHINDUCTOR_CACHE_DIR is kept. Returns the folder in use, or None when `folder` cannot
    be made (torch's default then). (A process-wide setting, so the command line calls it, not
    the library.)"""
    chosen = os.environ.get(CACHE_VARIABLE)
    if chosen and Path(chosen) != _torch_default_cache():
        return Path(chosen)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only weights folder: compiling still works, in torch's own folder
        return None
    os.environ[CACHE_VARIABLE] = str(folder)
    return folder


def _torch_default_cache() -> Path | None:
    """Where torch caches by default: importing torch._dynamo writes it into the variable itself,
    so a value equal to it is torch's, not the user's choice."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch layout: take any value as the user's
        return None
    return Path(os.path.abspath(default_cache_dir()))
