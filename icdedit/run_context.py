"""How a command runs its model: one run-options value, one way to load the Editor, and the few
facts about the device that every command shares (out of memory, a shard's own GPU).

Every command that runs a model (invert, reconstruct, edit, batch, generate, ui) takes the same
run flags (`cli/options.py` RUN_OPTIONS) into one `RunOptions` and loads its Editor through
`load_editor`: nothing about devices, precision, kernels or decoders is decided anywhere else.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from . import weights
from .attention import check_attention_request
from .compiling import check_toolchain, keep_compiled_code
from .editor import Editor
from .loader import base_variant, load_model, resolve_device, resolve_dtype
from .paths import weights_home
from .preview import PreviewDecoder, decoder_for, load_preview_decoder
from .reporting import Reporter
from .specs import ModelSpec
from .text import truncation_warning


@dataclass(frozen=True)
class RunOptions:
    """Where and how the model runs; none of it changes what an edit is, only how fast it is
    made (and, with `preview`, how its latents are turned into pixels)."""

    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = "auto"  # auto (fp16 on CUDA, fp32 elsewhere), fp32, fp16, bf16, fp64
    attention: str = "auto"  # fused attention kernel: auto, sdpa or xformers
    cuda_graphs: bool = False  # capture UNet evaluations as CUDA graphs and replay them
    compile: bool = False  # torch.compile the attention-free regions and the VAE
    preview: bool = False  # decode with the family's fast, approximate preview decoder
    offline: bool = False  # never fetch what is missing (HF_HUB_OFFLINE=1 does the same): fail naming it

    def check(self) -> None:
        """A bad --device, --dtype or --attention fails before anything else (milliseconds)."""
        resolve_dtype(self.dtype, resolve_device(self.device))
        check_attention_request(self.attention)

    def for_shard(self, shard: tuple[int, int] | None) -> RunOptions:
        """`auto` under torchrun / accelerate launch: this rank's own GPU."""
        if shard is None or self.device != "auto" or os.environ.get("LOCAL_RANK") is None:
            return self
        import torch

        if not torch.cuda.is_available():
            return self
        return replace(self, device=f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}")

    def decoder(self, spec: ModelSpec) -> PreviewDecoder | None:
        """The preview decoder asked for (its family must have one); fetched, if missing, with the
        model's files (`load_editor`)."""
        if not self.preview:
            return None
        decoder = decoder_for(spec)
        why = weights.offline_reason(self.offline)
        if why and not decoder.present:  # it cannot be fetched: say so before anything runs
            raise weights.missing_error(spec, weights.preview_needed(decoder), why)
        return decoder

    def decoder_label(self, spec: ModelSpec) -> str | None:
        """What decoded the images, as outputs record it; None for the model's own VAE."""
        decoder = self.decoder(spec)
        return decoder.label if decoder is not None else None

    def flags(self) -> dict[str, object]:
        """The options that differ from the defaults, as the command line spells them."""
        defaults = RunOptions()
        return {k.replace("_", "-"): v for k, v in asdict(self).items() if v != getattr(defaults, k)}


def load_editor(spec: ModelSpec, options: RunOptions, reporter: Reporter | None = None) -> Editor:
    """The Editor for `spec` under `options`: every check first, notes on what the options mean,
    what is missing fetched without asking (as `from_pretrained` does; with --offline or
    HF_HUB_OFFLINE one error naming every missing file instead), then the model."""
    reporter = reporter or Reporter()
    options.check()
    torch_device = resolve_device(options.device)
    decoder = options.decoder(spec)
    if decoder is not None:
        reporter.note(f"note: --preview: decoded by {decoder.name}, fast but approximate: for looking, not for keeping")
    if options.cuda_graphs and torch_device.type != "cuda":
        reporter.note(f"note: --cuda-graphs needs a CUDA device; running eagerly on {torch_device}")
    if options.compile:
        _prepare_compile(torch_device, reporter)
    if spec.random_weights:
        reporter.note(f"note: model {spec.name!r} has random weights: its images are noise (it checks an installation)")
    variant = base_variant(resolve_dtype(options.dtype, torch_device))
    weights.ensure_weights(spec, variant, offline_flag=options.offline, reporter=reporter, decoder=decoder)
    loaded = reporter.stage(f"loading {spec.name}", 1)
    bundle = load_model(
        spec, device=options.device, dtype=options.dtype, attention=options.attention, offline=options.offline
    )
    fast = None if decoder is None else load_preview_decoder(decoder, bundle.device, bundle.dtype)
    editor = Editor(bundle, cuda_graphs=options.cuda_graphs, compile=options.compile, preview_decoder=fast)
    loaded()
    return editor


def _prepare_compile(torch_device, reporter: Reporter) -> None:
    cache = keep_compiled_code(weights_home() / "compile-cache")  # before the first compile reads it
    check_toolchain(torch_device)
    kept = f"kept in {cache}" if cache else f"{weights_home()} is not writable: kept in torch's own folder"
    reporter.note(
        "note: --compile: the first item of each size compiles the model (minutes); later items and later runs "
        f"reuse it ({kept})"
    )
    if torch_device.type == "cpu":
        reporter.note("note: on the CPU, compiled runs were measured slower than plain ones (docs/benchmarks.md)")


def warn_truncation(editor: Editor, prompts, reporter: Reporter) -> dict[str, str]:
    """A warning per distinct prompt longer than the text encoder takes; {prompt: warning} of those."""
    warnings = {}
    for prompt in dict.fromkeys(p for p in prompts if p):
        message = truncation_warning(editor.tokenizer, prompt)
        if message:
            reporter.note(f"warning: {message}")
            warnings[prompt] = message
    return warnings


def is_out_of_memory(exc: BaseException) -> bool:
    """Out of device memory, by type: torch raises `torch.OutOfMemoryError` (CUDA, MPS); Python's
    own `MemoryError` covers host allocations that Python itself makes."""
    import torch

    return isinstance(exc, (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError))


def free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
