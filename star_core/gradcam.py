"""ST-GradCAM (paper Sec. 3.2, Eq. 10-13), computed with autograd, batched over videos and steps.

  Eq. 11  w^c_{t,k} = ∂d^c_t / ∂x^k_t       d^c_t: pre-softmax score of class c at step t
  Eq. 12  d^c_t ≈ Σ_k w^c_{t,k} x^k_t = Σ_i ã_{t,i} ξ^c_{t,i}   (+ bias terms: d is not linear in x)
  Eq. 13  ξ^c_{t,i} = Σ_k w^c_{t,k} s^k_i
  attended ST-GradCAM: α_{t,i} · σ(ξ^c_{t,i})

The derivative is the *partial* one of Eq. 11: h_{t-1}, c_{t-1}, y_{t-1} and RAM_t are held fixed
and only the LSTM input x_t varies (later steps do not contribute to d_t). To get it for every
(video, step) at once, a forward hook records the LSTM cell's inputs of a teacher-forced pass
(the emitted labels as targets), then the cell and W_o are re-run on all B·T recorded inputs as
one batch with x_t as a leaf. The hook lives in a context manager and is always removed; the
model holds no Grad-CAM state.

ã is the effective assembly weight (α scaled per ``model.assembly_norm``), so the identity
Σ_k w x_t = Σ_i ã ξ holds exactly for every normalisation.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

import torch

from star_core.model.star import IGNORE_INDEX, StarNet


class GradCam(NamedTuple):
    xi: torch.Tensor  # (B, T, N) ξ^c_{t,i} for the emitted class c of step t (0 on padding)
    weights: torch.Tensor  # (B, T, D) w^c_{t,k}
    scores: torch.Tensor  # (B, T) d^c_t
    attention: torch.Tensor  # (B, T, N) α_{t,i}
    assembly: torch.Tensor  # (B, T, N) ã_{t,i} (α scaled as in x_t)
    patterns: torch.Tensor  # (B, T, D) x_t


@contextlib.contextmanager
def record_cell_inputs(net: StarNet) -> Iterator[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Record (input, h_prev, c_prev) of every LSTM cell call while the context is open."""
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def hook(module, args, kwargs):  # noqa: ARG001 (module unused)
        inp = args[0]
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        calls.append((inp.detach(), hx[0].detach(), hx[1].detach()))

    handle = net.cell.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def st_gradcam(net: StarNet, feats: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> GradCam:
    """ST-GradCAM of one stream for the classes in ``labels`` (B, T) (emitted classes; -1 = none).

    Steps whose label is -1 get ξ = 0. The EOS class (C) is a valid target too. Runs the network in
    its current mode (call ``net.eval()`` first for deterministic maps).
    """
    B, T = labels.shape
    targets = torch.where(labels < 0, torch.full_like(labels, IGNORE_INDEX), labels)
    with torch.no_grad(), record_cell_inputs(net) as calls:
        out = net(feats, mask, targets, background=False)  # one cell call per step
    D = net.feat_dim
    inp = torch.stack([c[0] for c in calls], 1)  # (B, T, D+E+1)
    h_prev = torch.stack([c[1] for c in calls], 1)  # (B, T, H)
    c_prev = torch.stack([c[2] for c in calls], 1)  # (B, T, H)
    with torch.enable_grad():
        x = inp[..., :D].clone().requires_grad_(True)  # (B, T, D) leaf: x_t
        full = torch.cat([x, inp[..., D:]], dim=-1).reshape(B * T, -1)
        h, _ = net.cell(full, (h_prev.reshape(B * T, -1), c_prev.reshape(B * T, -1)))
        d_all = net.out(h).reshape(B, T, -1)  # (B, T, C+1)
        cls = labels.clamp(min=0)
        d = d_all.gather(-1, cls[..., None]).squeeze(-1)  # (B, T) d^c_t
        # Rows are independent, so the gradient of the sum gives every per-step gradient at once.
        (w,) = torch.autograd.grad(d.sum(), x)  # (B, T, D) Eq. 11
    valid = (labels >= 0).to(w.dtype)  # (B, T)
    w = w * valid[..., None]
    s = feats * mask[..., None].to(feats.dtype)  # (B, N, D) raw segment features (no dropout)
    xi = torch.einsum("btd,bnd->btn", w, s)  # (B, T, N) Eq. 13
    assembly = net.assembler.assembly_weights(out.attention, mask)
    return GradCam(xi=xi, weights=w, scores=d.detach() * valid, attention=out.attention, assembly=assembly, patterns=out.patterns)


def attended_score(attention: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """Attended ST-GradCAM α · σ(ξ) (Sec. 3.2), same shape as the inputs."""
    return attention * torch.sigmoid(xi)
