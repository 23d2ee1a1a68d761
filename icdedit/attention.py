"""Fused attention kernels: PyTorch's scaled-dot-product attention, or xformers' where it is
installed and measured faster.

Every fused call of the edit path goes through one `AttentionFn`: (B, heads, L, d) queries,
keys and values in, (B, heads, L, d) outputs out, softmax(q k^T / sqrt(d)) v. Explicit
probabilities (the maps that Prompt-to-Prompt reads or changes) never come from here.

`--attention auto` picks SDPA unless xformers is importable and the device is a GPU; then
both are timed once on the shapes that dominate an SD1.5 edit, and the faster is kept. The
choice is written to `$ICDEDIT_HOME/attention.json` per card, dtype and library versions, so
that it is measured once and every later run of that setup uses the same kernels (and gives
the same pixels).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import SettingsError, UsageError
from .files import write_atomically

log = logging.getLogger(__name__)

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
BACKENDS = ("auto", "sdpa", "xformers")
# xformers is kept only when it beats SDPA by this much: a tie keeps PyTorch's own kernels
XFORMERS_MARGIN = 0.95
# (batch, heads, queries, keys, head dim): SD1.5 at 512 px, an edit's 2 rows; the 64x64
# self-attention layers take most of the attention time, cross-attention has 77 keys
PROBE_SHAPES = ((2, 8, 4096, 4096, 40), (2, 8, 4096, 77, 40), (2, 8, 1024, 1024, 80))


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def xformers_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """xformers wants (B, L, heads, d): a transposed view, no copy; the output comes back the same way."""
    import xformers.ops

    out = xformers.ops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


KERNELS: dict[str, AttentionFn] = {"sdpa": sdpa, "xformers": xformers_attention}


def xformers_installed() -> bool:
    return importlib.util.find_spec("xformers") is not None


def _seconds(fn: AttentionFn, device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    total = 0.0
    for batch, heads, queries, keys, dim in PROBE_SHAPES:
        q = torch.randn(batch, heads, queries, dim, device=device, dtype=dtype)
        k, v = (torch.randn(batch, heads, keys, dim, device=device, dtype=dtype) for _ in range(2))
        fn(q, k, v)  # warm-up: kernel selection and loading
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn(q, k, v)
        torch.cuda.synchronize(device)
        total += time.perf_counter() - start
    return total


def measure(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Seconds for each kernel over `PROBE_SHAPES` on this GPU (a fraction of a second in all)."""
    return {name: _seconds(KERNELS[name], device, dtype) for name in ("sdpa", "xformers")}


def _setup_key(device: torch.device, dtype: torch.dtype) -> str:
    import xformers

    card = torch.cuda.get_device_name(device)
    return f"{card}|{str(dtype).removeprefix('torch.')}|torch {torch.__version__}|xformers {xformers.__version__}"


def check_attention_request(name: str) -> None:
    """A one-line error for an unknown kernel, or for xformers asked for but not installed."""
    if name not in BACKENDS:
        raise UsageError(f"--attention {name!r} is not a choice", f"use one of {', '.join(BACKENDS)}")
    if name == "xformers" and not xformers_installed():
        raise SettingsError(
            "--attention xformers: xformers is not installed",
            "pip install 'icdedit[xformers]' (it needs a CUDA build of torch), or use --attention sdpa",
        )


def choose_attention(
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    choices_file: Path | None = None,
    timer: Callable[[torch.device, torch.dtype], dict[str, float]] = measure,
    setup_key: Callable[[torch.device, torch.dtype], str] = _setup_key,
) -> str:
    """'auto', 'sdpa' or 'xformers' -> the kernel to use ('sdpa' or 'xformers')."""
    check_attention_request(name)
    if name != "auto":
        return name
    if not xformers_installed():
        return "sdpa"
    if device.type != "cuda":  # xformers' kernels are GPU kernels
        return "sdpa"
    return _remembered_choice(device, dtype, choices_file, timer, setup_key)


def _remembered_choice(device, dtype, choices_file, timer, setup_key) -> str:
    key = setup_key(device, dtype)
    choices = _read_choices(choices_file)
    if key not in choices:
        seconds = timer(device, dtype)
        faster = seconds["xformers"] < XFORMERS_MARGIN * seconds["sdpa"]
        choices[key] = {"kernel": "xformers" if faster else "sdpa", "seconds": seconds}
        log.info("attention on %s: %s (measured %s)", key, choices[key]["kernel"], seconds)
        if choices_file is not None:
            choices_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(choices_file, lambda temp: temp.write_text(json.dumps(choices, indent=2)))
    return choices[key]["kernel"]


def _read_choices(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        choices = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s; the attention kernels will be measured again", path)
        return {}
    return choices if isinstance(choices, dict) else {}
