"""CUDA graphs of the UNet: a 4-step UNet at 512 px is launch-bound, so each evaluation is
captured once and replayed.

One graph per (model, step, timestep, shapes, attention-control structure). Everything a
graph reads lives in static buffers that are refilled before each replay: the latent, the
UNet's inputs (prompt embeddings, guidance embedding, SDXL's pooled embedding and size ids),
and the attention controller's tensors (one
controller is kept per control structure and `load`ed with each new plan; its local-blend
maps accumulate in place). Python that decides *which* kernels run (the step windows, the
blend layers) ran once, at capture; that is why the structure is part of the key.

Off CUDA the same bookkeeping runs eagerly, which is how the CPU tests check it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionFn, sdpa
from .p2p.control import AttentionController
from .p2p.plan import ControlPlan
from .precision import at_least_float32


def call_unet(unet: torch.nn.Module, x: torch.Tensor, t, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """UNet(x, t) with `inputs`: encoder_hidden_states and timestep_cond, and for SDXL the
    pooled text embedding and size ids (`text_embeds`, `time_ids`)."""
    added = {k: inputs[k] for k in ("text_embeds", "time_ids") if k in inputs}
    return unet(
        x,
        t,
        encoder_hidden_states=inputs["encoder_hidden_states"],
        timestep_cond=inputs["timestep_cond"],
        added_cond_kwargs=added or None,
    ).sample


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph | None
    x: torch.Tensor
    timestep: torch.Tensor
    inputs: dict[str, torch.Tensor]  # static copies, refilled before each replay
    out: torch.Tensor | None = None


class GraphRunner:
    def __init__(self, unet: torch.nn.Module, device: torch.device, dtype: torch.dtype, attention: AttentionFn = sdpa):
        self.unet, self.device, self.dtype, self.attention = unet, device, dtype, attention
        self.capture = device.type == "cuda"
        self._graphs: dict[tuple, _Graph] = {}
        self._controllers: dict[tuple, AttentionController] = {}

    def controller(self, plan: ControlPlan, latent_size: tuple[int, int]) -> AttentionController:
        """A controller for `plan`, reused (with its buffers) for plans of the same structure."""
        fresh = AttentionController(plan, latent_size, self.device, self.dtype, self.attention)
        kept = self._controllers.setdefault(fresh.structure(), fresh)
        if kept is not fresh:
            kept.load(plan)
        return kept

    def evaluate(
        self,
        key: tuple,
        x: torch.Tensor,
        t: int,
        inputs: dict[str, torch.Tensor],
        controller: AttentionController | None,
    ) -> torch.Tensor:
        """UNet(x, t, inputs) through the graph for `key` (captured on first use)."""
        shapes = tuple((name, tuple(value.shape)) for name, value in sorted(inputs.items()))
        key = (*key, t, tuple(x.shape), shapes, None if controller is None else controller.structure())
        entry = self._graphs.get(key)
        fresh = entry is None
        if fresh:
            static = {name: torch.empty_like(value, dtype=self.dtype) for name, value in inputs.items()}
            entry = _Graph(None, torch.empty_like(x, dtype=self.dtype), torch.tensor(t, device=self.device), static)
            self._graphs[key] = entry
        entry.x.copy_(x)
        for name, value in inputs.items():
            entry.inputs[name].copy_(value)
        if not self.capture:
            return self._run(entry).to(at_least_float32(self.dtype))
        if fresh:
            self._capture(entry, controller)
        entry.graph.replay()
        return entry.out.to(at_least_float32(self.dtype))

    def _run(self, entry: _Graph) -> torch.Tensor:
        return call_unet(self.unet, entry.x, entry.timestep, entry.inputs)

    def _capture(self, entry: _Graph, controller: AttentionController | None) -> None:
        # warm-up runs on a side stream (as CUDA graphs require) must not count towards the
        # local-blend maps of this decode: keep them and put them back afterwards
        snapshot = controller.snapshot() if controller is not None else None
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._run(entry)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        entry.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(entry.graph):
            entry.out = self._run(entry)
        if controller is not None:  # the warm-ups and the capture added to the blend sums: undo them
            controller.restore(snapshot)
