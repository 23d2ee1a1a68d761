"""Attention control at run time: diffusers attention processors driven by one controller.

The controller owns the plan's tensors and the local-blend accumulator; the decode loop tells
it which step it is on (`begin_step`), and one processor per attention layer asks it how to
attend. Explicit attention probabilities are computed only where a map must be changed or
read: cross-attention inside the cross window, and the local-blend layers. Self-attention
injection needs no map: row t's output with row 0's probabilities is attention(q_0, k_0, v_t),
one fused call. Everywhere else it is fused scaled-dot-product attention.

Rows: the last 1 + n rows of the UNet batch are the source and the n targets. Rows before
them (the unconditional rows of the official batch of 4, kept only by the baseline) are
attended to normally and never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import AttentionFn, sdpa
from ..precision import at_least_float32
from .plan import ControlPlan


@dataclass(frozen=True)
class LayerInfo:
    name: str
    place: str  # "down", "mid" or "up"
    is_cross: bool


def attention_probs(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale), the softmax in float32 as diffusers does for fp16 models."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    return scores.to(at_least_float32(scores.dtype)).softmax(dim=-1).to(q.dtype)


class AttentionController:
    """Applies a `ControlPlan` to the attention layers of one UNet, for one decode."""

    def __init__(
        self,
        plan: ControlPlan,
        latent_size: tuple[int, int],
        device: torch.device,
        dtype: torch.dtype,
        attention: AttentionFn = sdpa,
    ):
        self.plan = plan
        self.step = 0
        self.dtype = dtype
        self.fused = attention  # every attention without an explicit map
        height, width = latent_size
        # Self-attention is replaced only at half the latent resolution and below (32x32 and
        # coarser at 512 px, the official `<= 32 ** 2` rule); local blend reads the level at a
        # quarter of it (16x16 at 512 px: 1/32 of the image side).
        self.self_limit = (height // 2) * (width // 2)
        self.blend_size = (height // 4, width // 4)
        self.num_targets = len(plan.targets)
        to = dict(device=device, dtype=dtype)
        self._equalizers = [t.equalizer.to(**to) for t in plan.targets]
        self._mappers = [t.mapper.to(**to) if t.mapper is not None else None for t in plan.targets]
        self._refine = [
            (t.refine_index.to(device), t.refine_weight.to(**to)) if t.refine_index is not None else None
            for t in plan.targets
        ]
        self._alphas = [t.cross_alpha.to(**to) for t in plan.targets]
        blend_dtype = at_least_float32(dtype)
        self._blend_words = torch.zeros(1 + self.num_targets, plan.token_count, device=device, dtype=blend_dtype)
        # summed over steps, layers and heads; updated in place, so that captured CUDA graphs
        # of the UNet accumulate into the same buffer on every replay
        rows, blend_queries = 1 + self.num_targets, self.blend_size[0] * self.blend_size[1]
        self._blend_sum = torch.zeros(rows, blend_queries, device=device, dtype=blend_dtype)
        self.load(plan)

    def structure(self) -> tuple:
        """What decides which kernels run in each step: equal structures can share CUDA graphs."""
        plan = self.plan
        return (
            self.blend_size,
            self.dtype,
            self.fused,
            plan.num_steps,
            plan.token_count,
            tuple(t.mode for t in plan.targets),
            plan.blends,
            plan.self_window,
            tuple(plan.cross_active(k) for k in range(plan.num_steps)),
        )

    @torch.no_grad()
    def load(self, plan: ControlPlan) -> None:
        """Take another plan of the same structure: its values are copied into our buffers."""
        self.plan = plan
        for i, t in enumerate(plan.targets):
            self._equalizers[i].copy_(t.equalizer)
            self._alphas[i].copy_(t.cross_alpha)
            if t.mapper is not None:
                self._mappers[i].copy_(t.mapper)
            else:
                self._refine[i][0].copy_(t.refine_index)
                self._refine[i][1].copy_(t.refine_weight)
        self._blend_words.zero_()
        self._blend_words[0, list(plan.source_blend_positions)] = 1.0
        for i, t in enumerate(plan.targets):
            self._blend_words[1 + i, list(t.blend_positions)] = 1.0
        self.reset()

    def reset(self) -> None:
        """Forget the local-blend maps of a previous decode."""
        self._blend_sum.zero_()
        self.step = 0

    def snapshot(self) -> torch.Tensor:
        """The step's local-blend state, before runs that must not count (CUDA graph warm-ups)."""
        return self._blend_sum.clone()

    def restore(self, snapshot: torch.Tensor) -> None:
        """Undo the evaluations since `snapshot`."""
        self._blend_sum.copy_(snapshot)

    # -- driven by the decode loop ------------------------------------------------------
    def begin_step(self, step: int) -> None:
        self.step = step

    def after_step(self, step: int, z: torch.Tensor) -> torch.Tensor:
        """Local blend: keep row 0 outside the mask of the edited words (docs/numerics.md section 6)."""
        if not self.plan.blends:
            return z
        # A sum, where the official code takes the mean over layers and heads: the count is the
        # same for every row, and each row's map is divided by its own maximum below.
        maps = self._blend_sum.view(-1, 1, *self.blend_size)
        maps = F.max_pool2d(maps, kernel_size=3, stride=1, padding=1)
        maps = F.interpolate(maps, size=tuple(z.shape[2:]), mode="nearest")
        peak = maps.amax(dim=(2, 3), keepdim=True)
        mask = (maps / torch.where(peak > 0, peak, torch.ones_like(peak))) > self.plan.blend_threshold
        mask = (mask[:1] | mask).to(z.dtype)
        return z[:1] + mask * (z - z[:1])

    # -- asked by the processors ----------------------------------------------------------
    def attend(self, layer: LayerInfo, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        """(B, heads, L, d) queries, keys, values -> (B, heads, L, d) outputs for this layer and step."""
        if layer.is_cross:
            return self._cross(layer, q, k, v, scale)
        return self._self(q, k, v)

    def _self(self, q, k, v):
        start, end = self.plan.self_window
        if not (start <= self.step < end and q.shape[2] <= self.self_limit):
            return self.fused(q, k, v)
        src = q.shape[0] - 1 - self.num_targets
        own = self.fused(q[: src + 1], k[: src + 1], v[: src + 1])
        n = self.num_targets
        injected = self.fused(
            q[src : src + 1].expand(n, -1, -1, -1), k[src : src + 1].expand(n, -1, -1, -1), v[src + 1 :]
        )
        return torch.cat([own, injected])

    def _reads_blend(self, layer: LayerInfo, query_len: int) -> bool:
        return self.plan.blends and layer.place != "mid" and query_len == self.blend_size[0] * self.blend_size[1]

    def _cross(self, layer, q, k, v, scale):
        controls = self.plan.cross_active(self.step)
        reads = self._reads_blend(layer, q.shape[2])
        if not (controls or reads):
            return self.fused(q, k, v)
        src = q.shape[0] - 1 - self.num_targets
        probs = attention_probs(q[src:], k[src:], scale)  # (1 + n, heads, Lq, L)
        if controls:
            probs = torch.cat([probs[:1], self._controlled_targets(probs)])
        if reads:
            self._accumulate_blend(probs)
        out = torch.matmul(probs, v[src:])
        if src == 0:
            return out
        return torch.cat([self.fused(q[:src], k[:src], v[:src]), out])

    def _controlled_targets(self, probs: torch.Tensor) -> torch.Tensor:
        """Row t := alpha * reweight(map(row 0)) + (1 - alpha) * row t; row 0 is never altered."""
        base = probs[0]
        rows = []
        for i in range(self.num_targets):
            own = probs[1 + i]
            if self._mappers[i] is not None:  # replace: token-to-token remap of the source map
                mapped = torch.matmul(base, self._mappers[i])
            else:  # refine: aligned tokens take the source token's map, others keep their own
                index, weight = self._refine[i]
                mapped = base[..., index] * weight + own * (1 - weight)
            controlled = mapped * self._equalizers[i]
            alpha = self._alphas[i][self.step]
            rows.append(alpha * controlled + (1 - alpha) * own)
        return torch.stack(rows)

    def _accumulate_blend(self, probs: torch.Tensor) -> None:
        # sum over the chosen words' columns and over heads; the sum over steps is what
        # local blend reads (maps accumulated over the steps so far, after this step's control)
        self._blend_sum.add_(torch.einsum("rhqc,rc->rq", probs.to(self._blend_sum.dtype), self._blend_words))


class GroupedController:
    """Several independent edits in one UNet batch: each controller owns its consecutive rows
    (its source, then its targets) and never sees the others'."""

    def __init__(self, controllers: list[AttentionController]):
        self.controllers = controllers
        self.rows = [1 + c.num_targets for c in controllers]

    def begin_step(self, step: int) -> None:
        for controller in self.controllers:
            controller.begin_step(step)

    def attend(self, layer: LayerInfo, q, k, v, scale: float) -> torch.Tensor:
        parts = zip(self.controllers, q.split(self.rows), k.split(self.rows), v.split(self.rows))
        return torch.cat([c.attend(layer, qi, ki, vi, scale) for c, qi, ki, vi in parts])

    def after_step(self, step: int, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([c.after_step(step, zi) for c, zi in zip(self.controllers, z.split(self.rows))])


class FixedAttention:
    """No control: every layer, every step, the same fused kernel (for runs without P2P when
    the kernel is not diffusers' default, e.g. xformers)."""

    def __init__(self, attention: AttentionFn):
        self.fused = attention

    def attend(self, layer: LayerInfo, q, k, v, scale: float) -> torch.Tensor:
        return self.fused(q, k, v)


class ControlledAttnProcessor:
    """A diffusers attention processor that hands q, k, v to the controller."""

    def __init__(self, controller: AttentionController | GroupedController, layer: LayerInfo):
        self.controller = controller
        self.layer = layer

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        if attention_mask is not None:
            raise ValueError("attention masks are not supported under Prompt-to-Prompt control")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        batch = query.shape[0]
        head_dim = key.shape[-1] // attn.heads

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query, key, value = heads(query), heads(key), heads(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = self.controller.attend(self.layer, query, key, value, attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def layer_info(processor_name: str, is_cross: bool) -> LayerInfo:
    """'down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor' -> LayerInfo."""
    place = processor_name.split("_", 1)[0]
    return LayerInfo(processor_name.removesuffix(".processor"), place, is_cross)


def install_processors(
    unet: torch.nn.Module, controller: AttentionController | GroupedController | FixedAttention
) -> None:
    """One `ControlledAttnProcessor` per attention layer of `unet`, all asking `controller`."""
    modules = dict(unet.named_modules())
    processors = {}
    for name in unet.attn_processors:
        module = modules[name.removesuffix(".processor")]
        processors[name] = ControlledAttnProcessor(controller, layer_info(name, bool(module.is_cross_attention)))
    unet.set_attn_processor(processors)  # it consumes the dict: `processors` is ours to give


@contextmanager
def attention_control(unet: torch.nn.Module, controller: AttentionController | GroupedController) -> Iterator:
    """Install controlled processors on every attention layer of `unet`; restore the old ones after."""
    previous = dict(unet.attn_processors)
    install_processors(unet, controller)
    try:
        yield controller
    finally:
        unet.set_attn_processor(dict(previous))
