"""CUDA graphs of the UNet: a 4-step UNet at 512 px is launch-bound, so each evaluation is
captured once and replayed.

One graph per (model, step, timestep, shapes, attention-control structure). Everything a
graph reads lives in static buffers that are refilled before each replay: the latent, the
prompt embeddings, the guidance embedding, and the attention controller's tensors (one
controller is kept per control structure and `load`ed with each new plan; its local-blend
maps accumulate in place). Python that decides *which* kernels run (the step windows, the
blend layers) ran once, at capture; that is why the structure is part of the key.

Off CUDA the same bookkeeping runs eagerly, which is how the CPU tests check it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .p2p.control import AttentionController
from .p2p.plan import ControlPlan


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph | None
    x: torch.Tensor
    timestep: torch.Tensor
    embeddings: torch.Tensor
    cond: torch.Tensor
    out: torch.Tensor | None = None


class GraphRunner:
    def __init__(self, unet: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        self.unet, self.device, self.dtype = unet, device, dtype
        self.capture = device.type == "cuda"
        self._graphs: dict[tuple, _Graph] = {}
        self._controllers: dict[tuple, AttentionController] = {}

    def controller(self, plan: ControlPlan, latent_size: tuple[int, int]) -> AttentionController:
        """A controller for `plan`, reused (with its buffers) for plans of the same structure."""
        fresh = AttentionController(plan, latent_size, self.device, self.dtype)
        kept = self._controllers.setdefault(fresh.structure(), fresh)
        if kept is not fresh:
            kept.load(plan)
        return kept

    def evaluate(self, key: tuple, x: torch.Tensor, t: int, embeddings: torch.Tensor, cond: torch.Tensor,
                 controller: AttentionController | None) -> torch.Tensor:  # fmt: skip
        """UNet(x, t, embeddings, cond) through the graph for `key` (captured on first use)."""
        key = (*key, t, tuple(x.shape), tuple(embeddings.shape), None if controller is None else controller.structure())
        entry = self._graphs.get(key)
        fresh = entry is None
        if fresh:
            entry = _Graph(None, torch.empty_like(x, dtype=self.dtype), torch.tensor(t, device=self.device),
                           torch.empty_like(embeddings, dtype=self.dtype), torch.empty_like(cond, dtype=self.dtype))  # fmt: skip
            self._graphs[key] = entry
        entry.x.copy_(x)
        entry.embeddings.copy_(embeddings)
        entry.cond.copy_(cond)
        if not self.capture:
            return self._run(entry).float()
        if fresh:
            self._capture(entry, controller)
        entry.graph.replay()
        return entry.out.float()

    def _run(self, entry: _Graph) -> torch.Tensor:
        return self.unet(entry.x, entry.timestep, encoder_hidden_states=entry.embeddings, timestep_cond=entry.cond).sample

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
        if controller is not None:  # two warm-ups and the capture ran Python: count one
            controller.restore(snapshot, runs=3)

    def denoiser(
        self,
        model: str,
        embeddings: torch.Tensor,
        guidance: Callable[[int], list[float]],
        cond_of: Callable[[list[float]], torch.Tensor],
        controller: AttentionController | None = None,
        on_step: Callable[[], None] | None = None,
    ):
        def eps(x: torch.Tensor, t: int, step: int) -> torch.Tensor:
            if controller is not None:
                controller.begin_step(step)
            out = self.evaluate((model, step), x, t, embeddings, cond_of(guidance(t)), controller)
            if on_step is not None:
                on_step()
            return out

        return eps
