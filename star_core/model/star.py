"""STAR network, one stream (paper Sec. 3.1): action assembler + LSTM label generator.

  Eq. 4/9  h_t = LSTM(h_{t-1}, [x_t ; E(y_{t-1}) ; RAM_t])   (RAM_t input only when ``use_ram``)
  Eq. 5    y_t = softmax(W_o h_t) over C classes + 1 end-of-sequence class (index C)

Label sequences (open point 1): a video's label *set* is emitted as a sequence in the order given
by ``star_core.train_loop.label_order`` followed by EOS. ``targets`` (B, T) hold class indices,
the EOS index C after the last label, and -100 as padding (see :func:`make_targets`). Teacher
forcing feeds the target y_{t-1}; inference decodes greedily, masking classes already emitted (a
class is never emitted twice) and stopping at EOS (after ``max_steps`` labels EOS is forced).
y_0 is a dedicated start token (embedding index C + 1).

Table 1 ablation switches: stem = ``use_coverage=False, use_ram=False`` with β = γ = δ = 0;
"+Sparsity" = β > 0; "+Coverage" = ``use_coverage`` and γ > 0; "+RAM" = ``use_ram`` and δ > 0.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from star_core.model.assembler import Assembler, AssemblyStep, segment_positions
from star_core.model.normalize import FeatureStandardizer
from star_core.model.config import ModelConfig

IGNORE_INDEX = -100


class StarOutput(NamedTuple):
    step_logits: torch.Tensor  # (B, T, C+1) pre-softmax d_t (index C = end-of-sequence)
    attention: torch.Tensor  # (B, T, N) α, 0 on padding
    ram: torch.Tensor  # (B, T) RAM_t (Eq. 8)
    patterns: torch.Tensor  # (B, T, D) instance-patterns x_t
    labels: torch.Tensor  # (B, T) long: emitted (decoding) or target (teacher forcing) class; C = EOS; -1 after EOS
    background_logits: torch.Tensor | None = None  # (B, T, C+1) d_t of the complement pattern x̄_t (teacher forcing only)


class Encoded(NamedTuple):
    feats: torch.Tensor  # (B, N, D) after input dropout
    keys: torch.Tensor  # (B, N, A) U_α s
    mask: torch.Tensor  # (B, N) bool
    positions: torch.Tensor  # (B, N)


class StepState(NamedTuple):
    h: torch.Tensor  # (B, H)
    c: torch.Tensor  # (B, H)
    centroid: torch.Tensor  # (B,) centroid of the previous step's attention
    t: int


class StepResult(NamedTuple):
    logits: torch.Tensor  # (B, C+1)
    assembly: AssemblyStep
    state: StepState
    background_logits: torch.Tensor | None = None  # (B, C+1), only when asked for


def make_targets(sequences: Sequence[Sequence[int]], num_classes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Class-index sequences -> (B, T) targets with EOS appended and -100 padding (T = longest + 1)."""
    T = max((len(s) for s in sequences), default=0) + 1
    out = torch.full((len(sequences), T), IGNORE_INDEX, dtype=torch.long)
    for b, seq in enumerate(sequences):
        if len(set(seq)) != len(seq):
            raise ValueError(f"label sequence {list(seq)} repeats a class")
        for t, c in enumerate(seq):
            if not 0 <= c < num_classes:
                raise ValueError(f"class index {c} out of range [0, {num_classes})")
            out[b, t] = c
        out[b, len(seq)] = num_classes
    return out.to(device)


class StarNet(nn.Module):
    """One stream of STAR (RGB or flow)."""

    def __init__(self, *, feat_dim: int, num_classes: int, cfg: ModelConfig):
        super().__init__()
        if feat_dim <= 0 or num_classes <= 0:
            raise ValueError(f"StarNet needs feat_dim > 0 and num_classes > 0, got {feat_dim}, {num_classes}")
        self.feat_dim = feat_dim
        self.num_classes = num_classes
        self.cfg = cfg
        self.eos = num_classes  # end-of-sequence class index
        self.start_token = num_classes + 1  # y_0
        # Open point 8: "dropout 0.8" read as keep-probability; cfg.dropout is the drop probability.
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.feature_norm not in ("none", "standardize"):
            raise ValueError(f"model.feature_norm must be 'none' or 'standardize', got {cfg.feature_norm!r}")
        self.standardize = FeatureStandardizer(feat_dim, enabled=cfg.feature_norm == "standardize")
        self.assembler = Assembler(feat_dim=feat_dim, hidden_dim=cfg.hidden_dim, cfg=cfg)
        self.embed = nn.Embedding(num_classes + 2, cfg.label_embed_dim)
        self.cell = nn.LSTMCell(feat_dim + cfg.label_embed_dim + 1, cfg.hidden_dim)  # Eq. 9 input [x; E(y); RAM]
        self.out = nn.Linear(cfg.hidden_dim, num_classes + 1)  # W_o (Eq. 5)

    # -- step-level API (used by forward, joint two-stream decoding and ST-GradCAM) --
    def encode(self, feats: torch.Tensor, mask: torch.Tensor) -> Encoded:
        if feats.ndim != 3 or feats.shape[-1] != self.feat_dim:
            raise ValueError(f"StarNet expects features (B, N, {self.feat_dim}), got {tuple(feats.shape)}")
        if mask.shape != feats.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match features {tuple(feats.shape[:2])}")
        mask = mask.bool()
        feats = self.standardize(feats, mask)  # identity unless cfg.feature_norm == "standardize"
        feats = self.dropout(feats) * mask[..., None].to(feats.dtype)  # (B, N, D), padding zeroed
        return Encoded(feats=feats, keys=self.assembler.keys(feats), mask=mask, positions=segment_positions(mask, self.cfg.position_norm))

    def begin(self, enc: Encoded) -> StepState:
        B = enc.feats.shape[0]
        h = enc.feats.new_zeros(B, self.cfg.hidden_dim)
        return StepState(h=h, c=torch.zeros_like(h), centroid=self.assembler.initial_centroid(enc.mask), t=0)

    def step(self, enc: Encoded, state: StepState, y_prev: torch.Tensor, background: bool = False) -> StepResult:
        """One recurrent step t: assemble x_t from h_{t-1}, update the LSTM with y_{t-1}, emit d_t.

        ``background``: also score the complement pattern x̄_t = Σ_i (1 − α_{t,i}) s_i (scaled like
        x_t) through the same LSTM step (same h_{t-1}, y_{t-1}, RAM_t); its logits feed the optional
        background-contrast loss (beyond the paper, ``loss.background_weight``).
        """
        asm = self.assembler(enc.keys, enc.feats, enc.mask, enc.positions, state.h, state.centroid, first_step=state.t == 0)
        ram_in = asm.ram if self.cfg.use_ram else torch.zeros_like(asm.ram)
        rest = torch.cat([self.embed(y_prev), ram_in[:, None]], dim=-1)  # (B, E+1)
        h, c = self.cell(torch.cat([asm.pattern, rest], dim=-1), (state.h, state.c))  # input (B, D+E+1)
        logits = self.out(h)  # (B, C+1)
        bg_logits = None
        if background:
            comp = (1.0 - asm.alpha) * enc.mask.to(asm.alpha.dtype)  # (B, N)
            bg_pattern = self.assembler.assemble(comp, enc.feats, enc.mask)  # (B, D)
            hb, _ = self.cell(torch.cat([bg_pattern, rest], dim=-1), (state.h, state.c))
            bg_logits = self.out(hb)
        return StepResult(
            logits=logits, assembly=asm, state=StepState(h=h, c=c, centroid=asm.centroid, t=state.t + 1), background_logits=bg_logits
        )

    def forward(
        self,
        feats: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor | None = None,
        max_steps: int | None = None,
        background: bool | None = None,
    ) -> StarOutput:
        """Teacher forcing with ``targets`` (B, T); greedy decoding (no repeats, stop at EOS) without.

        ``background`` (teacher forcing only; default: in training mode) also returns the logits of
        the complement patterns for the background-contrast loss.
        """
        if targets is None:
            return greedy_decode([self], [feats], mask, max_steps=self.cfg.max_steps if max_steps is None else max_steps).outputs[0]
        enc = self.encode(feats, mask)
        B, T = targets.shape
        if B != feats.shape[0]:
            raise ValueError(f"targets batch {B} does not match features batch {feats.shape[0]}")
        state = self.begin(enc)
        background = self.training if background is None else background
        y_prev = torch.full((B,), self.start_token, dtype=torch.long, device=feats.device)
        logits, alphas, rams, patterns, bg = [], [], [], [], []
        for t in range(T):
            r = self.step(enc, state, y_prev, background=background)
            logits.append(r.logits)
            bg.append(r.background_logits)
            alphas.append(r.assembly.alpha)
            rams.append(r.assembly.ram)
            patterns.append(r.assembly.pattern)
            state = r.state
            y_prev = targets[:, t].clamp(min=0)  # padding (-100) after EOS: any token, its steps are ignored
        labels = torch.where(targets == IGNORE_INDEX, torch.full_like(targets, -1), targets)
        return StarOutput(
            step_logits=torch.stack(logits, 1),  # (B, T, C+1)
            attention=torch.stack(alphas, 1),  # (B, T, N)
            ram=torch.stack(rams, 1),  # (B, T)
            patterns=torch.stack(patterns, 1),  # (B, T, D)
            labels=labels,
            background_logits=torch.stack(bg, 1) if background else None,  # (B, T, C+1)
        )


class Decoded(NamedTuple):
    outputs: list[StarOutput]  # one per stream
    labels: torch.Tensor  # (B, T) emitted classes, C = EOS, -1 after EOS
    probs: torch.Tensor  # (B, T) fused probability of the emitted class (0 after EOS)


def greedy_decode(
    nets: Sequence[StarNet],
    feats: Sequence[torch.Tensor],
    mask: torch.Tensor,
    max_steps: int,
    weights: Sequence[float] | None = None,
) -> Decoded:
    """Greedy decoding of one or several streams that share each emitted label.

    With several nets the class distribution of each step is the weighted mean of the streams'
    softmax (paper Sec. 4.1: RGB:flow 1:1 class scores) and the emitted label is fed to every
    stream. Already-emitted classes are masked; after ``max_steps`` labels EOS is forced; decoding
    stops once every video emitted EOS.
    """
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    weights = list(weights) if weights is not None else [1.0 / len(nets)] * len(nets)
    C = nets[0].num_classes
    encs = [net.encode(f, mask) for net, f in zip(nets, feats)]
    states = [net.begin(e) for net, e in zip(nets, encs)]
    B = mask.shape[0]
    device = mask.device
    y_prev = torch.full((B,), C + 1, dtype=torch.long, device=device)
    emitted = torch.zeros(B, C + 1, dtype=torch.bool, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    rec: list[dict[str, list[torch.Tensor]]] = [{"logits": [], "alpha": [], "ram": [], "pattern": []} for _ in nets]
    labels, probs = [], []
    for t in range(max_steps + 1):
        fused = 0.0
        for k, (net, enc) in enumerate(zip(nets, encs)):
            r = net.step(enc, states[k], y_prev)
            states[k] = r.state
            rec[k]["logits"].append(r.logits)
            rec[k]["alpha"].append(r.assembly.alpha)
            rec[k]["ram"].append(r.assembly.ram)
            rec[k]["pattern"].append(r.assembly.pattern)
            fused = fused + weights[k] * torch.softmax(r.logits.float(), dim=-1)  # (B, C+1)
        fused = fused.masked_fill(emitted, -1.0)  # never emit a class twice
        if t == max_steps:
            fused[:, :C] = -1.0  # force EOS after max_steps labels
        p, y = fused.max(dim=-1)  # (B,)
        labels.append(torch.where(done, torch.full_like(y, -1), y))
        probs.append(torch.where(done, torch.zeros_like(p), p))
        emitted[torch.arange(B, device=device), y] = True
        done = done | (y == C)
        y_prev = y
        if bool(done.all()):
            break
    lab = torch.stack(labels, 1)  # (B, T)
    outs = [
        StarOutput(
            step_logits=torch.stack(r["logits"], 1),
            attention=torch.stack(r["alpha"], 1),
            ram=torch.stack(r["ram"], 1),
            patterns=torch.stack(r["pattern"], 1),
            labels=lab,
        )
        for r in rec
    ]
    return Decoded(outputs=outs, labels=lab, probs=torch.stack(probs, 1))
