"""TV-L1 optical flow in PyTorch: OpenCV's ``DualTVL1OpticalFlow`` numerics, batched over frame pairs, on any device.

The formulation is the one OpenCV contrib implements (Zach, Pock & Bischof 2007, "A duality based
approach for realtime TV-L1 optical flow", in the form of Sanchez, Meinhardt-Llopis & Facciolo 2013,
with Wedel et al.'s median filtering of the flow), step for step, with the parameters that
``star_core.video.flow.TVL1_PARAMS`` gives OpenCV:

- images as float in 0..255; a pyramid of ``nscales`` levels, each the previous one resized by
  ``scale_step`` (bilinear, OpenCV's pixel-centre mapping and edge clamping; the pyramid stops
  early below 16 pixels); the coarsest level starts from zero flow, each finer level from the
  coarser flow resized up and divided by ``scale_step``;
- per level, ``warps`` warpings: I1 and its centred gradient are warped by the current flow with
  bicubic interpolation (A = -0.75, zero outside the image; the map coordinates are used unrounded,
  as by the OpenCV 5.1 ``cv::remap`` we test against: older OpenCVs round them to 1/32 pixel), then
  the data term is linearised around that flow;
- per warping, up to ``outer_iterations`` x ``inner_iterations`` iterations of the primal-dual
  scheme: thresholding step for v (lambda * theta), u = v + theta * div(p), dual step
  p = (p + tau/theta * grad u) / (1 + tau/theta * |grad u|), with OpenCV's one-sided
  differences and boundary rules; a 5x5 median filter of u (replicated border, an exact min/max
  selection network) before each outer iteration;
- the same stopping rule: a warping ends once the squared change of u summed over the image is at
  most ``epsilon**2 * H * W``; the counter is not reset between outer iterations, so the warping
  ends (no more median filtering) as soon as it converges.

Batching: a batch of pairs runs in lock step. Each pair keeps its own convergence flag on the
device; a converged pair's u and p are frozen (``torch.where``), so every pair follows exactly its
own OpenCV iteration path. The loop ends when every pair in the batch converged or the iteration
limit is reached. Checking "all converged" needs a device->host sync, so on CUDA it is read every
``check_every`` iterations (default 10): a batch may run up to 9 extra iterations in which nothing
changes. That costs time, never values.

Differences from OpenCV that remain: float rounding order (OpenCV sums the error serially in
float32, torch in a tree; resampling weights are applied in a different order), so a pair may stop
one iteration earlier or later than OpenCV's; ``gamma`` (illumination term) is not implemented
(OpenCV's default 0 is what we use). See docs/extraction.md for the measured agreement.

Shapes: frames (B, H, W), uint8 or float in 0..255 -> flow (B, 2, H, W) float32 in pixels, channel
0 = dx (right), 1 = dy (down), from the first frame of each pair to the second (as flow.py).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from star_core.video.flow import TVL1_PARAMS

MIN_PYRAMID_SIDE_PX = 16  # OpenCV stops the pyramid when a side drops below this
log = logging.getLogger("star.video")

CUBIC_A = -0.75  # cv::remap INTER_CUBIC's kernel parameter
FLOAT_EPSILON = float(np.finfo(np.float32).eps)  # estimateV's "gradient is zero" threshold
# Device bytes per pixel of one pair at full resolution, for the default batch size: ~35 float32 planes
# of state and temporaries, 50 for the 5x5 median windows, and the coarser levels (~1.5x the full level
# for the pyramid images). Checked against the CPU peak-RSS slope in benchmarks/bench_flow.py.
BYTES_PER_PIXEL = 400
MAX_DEFAULT_BATCH = 256  # beyond this a GPU is saturated at 256x340; more only costs memory


@dataclass(frozen=True)
class TVL1Params:
    """Parameters of the TV-L1 scheme; the defaults are ``flow.TVL1_PARAMS`` (what OpenCV gets)."""

    tau: float = TVL1_PARAMS["tau"]
    lambda_: float = TVL1_PARAMS["lambda_"]
    theta: float = TVL1_PARAMS["theta"]
    nscales: int = TVL1_PARAMS["nscales"]
    warps: int = TVL1_PARAMS["warps"]
    epsilon: float = TVL1_PARAMS["epsilon"]
    inner_iterations: int = TVL1_PARAMS["innerIterations"]
    outer_iterations: int = TVL1_PARAMS["outerIterations"]
    scale_step: float = TVL1_PARAMS["scaleStep"]
    median_filtering: int = TVL1_PARAMS["medianFiltering"]
    gamma: float = TVL1_PARAMS["gamma"]

    def __post_init__(self) -> None:
        if self.gamma != 0.0:
            raise ValueError(f"TVL1Params: gamma={self.gamma} (illumination term) is not implemented; use 0")
        if self.median_filtering not in (0, 1, 3, 5):
            raise ValueError(f"TVL1Params: median_filtering must be 0/1 (off), 3 or 5 (OpenCV's float median), got {self.median_filtering}")
        if not 0 < self.scale_step < 1 or self.nscales < 1 or self.warps < 1:
            raise ValueError(
                f"TVL1Params: need 0 < scale_step < 1, nscales >= 1, warps >= 1 (got {self.scale_step}, {self.nscales}, {self.warps})")
        if self.inner_iterations < 1 or self.outer_iterations < 1 or self.tau <= 0 or self.theta <= 0:
            raise ValueError("TVL1Params: iterations, tau and theta must be positive")


@dataclass
class FlowStats:
    """What a call did: iterations summed over pairs, and the iteration steps the batch ran (lock step)."""

    pairs: int = 0
    pair_iterations: int = 0  # primal-dual iterations in which a pair was still active, summed over pairs
    batch_iterations: int = 0  # iterations executed for whole batches (>= pair_iterations / batch size)
    per_level: list[int] = field(default_factory=list)  # pair iterations per pyramid level (finest first)

    def add(self, other: "FlowStats") -> None:
        self.pairs += other.pairs
        self.pair_iterations += other.pair_iterations
        self.batch_iterations += other.batch_iterations
        if len(self.per_level) < len(other.per_level):
            self.per_level += [0] * (len(other.per_level) - len(self.per_level))
        for i, n in enumerate(other.per_level):
            self.per_level[i] += n


# ----- building blocks, each checked against its OpenCV counterpart in the tests ------------------------------------------
def pyramid_sizes(height: int, width: int, params: TVL1Params) -> list[tuple[int, int]]:
    """(H, W) of every pyramid level, finest first: each side rounded from the previous times scale_step."""
    sizes = [(height, width)]
    for _ in range(1, params.nscales):
        h, w = sizes[-1]
        nh, nw = int(round(h * params.scale_step)), int(round(w * params.scale_step))  # cvRound (half to even, as round)
        if nh < MIN_PYRAMID_SIDE_PX or nw < MIN_PYRAMID_SIDE_PX:
            break
        sizes.append((nh, nw))
    return sizes


def _linear_taps(src: int, dst: int, inv_scale: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cv::resize INTER_LINEAR along one axis: source indices (i0, i1) and weight of i1 for each output index."""
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * (1.0 / inv_scale) - 0.5).astype(np.float32)
    i0 = np.floor(pos)
    frac = (pos - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    low = i0 < 0
    high = i0 >= src - 1
    frac[low | high] = 0.0
    i0 = np.clip(i0, 0, src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    return (torch.from_numpy(i0).to(device), torch.from_numpy(i1).to(device), torch.from_numpy(frac).to(device))


def resize_linear(img: torch.Tensor, size: tuple[int, int], inv_scale: tuple[float, float] | None = None) -> torch.Tensor:
    """cv::resize(..., INTER_LINEAR) of float images (..., H, W) to ``size`` = (h, w).

    ``inv_scale`` = (fy, fx) as passed to cv::resize (the pyramid passes scale_step); None: the size ratio
    (what cv::resize uses when given a destination size). Rows first, then columns, as OpenCV.
    """
    h, w = img.shape[-2:]
    fy, fx = inv_scale if inv_scale is not None else (size[0] / h, size[1] / w)
    x0, x1, ax = _linear_taps(w, size[1], fx, img.device)
    y0, y1, ay = _linear_taps(h, size[0], fy, img.device)
    rows = img.index_select(-1, x0) * (1.0 - ax) + img.index_select(-1, x1) * ax  # horizontal pass
    return rows.index_select(-2, y0) * (1.0 - ay)[:, None] + rows.index_select(-2, y1) * ay[:, None]


def centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * central differences of (B, H, W); one-sided halves at the borders (OpenCV's centeredGradient)."""
    pad = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2])
    dy = 0.5 * (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1])
    return dx, dy


def forward_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of (..., H, W), zero in the last column (dx) / last row (dy)."""
    dx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    dy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence of (px, py) (..., H, W), with p = 0 before the first row/column."""
    return (px - F.pad(px[..., :, :-1], (1, 0))) + (py - F.pad(py[..., :-1, :], (0, 0, 1, 0)))


def _odd_even_merge_sort(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort of n = 2**k wires (min goes to i)."""
    pairs, p = [], 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.lru_cache(maxsize=None)
def median_network(n_values: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """A selection network for the median of ``n_values`` (odd): Batcher's sort padded with +inf wires, pruned
    to the comparators the middle output depends on. Items: (i, j, keep min in i, keep max in j)."""
    width = 1 << (n_values - 1).bit_length()
    infinite = [w >= n_values for w in range(width)]
    live = []
    for i, j in _odd_even_merge_sort(width):
        if infinite[j]:
            continue  # min(x, +inf) = x: nothing moves
        if infinite[i]:
            raise AssertionError("odd-even merge sort never compares +inf above a finite wire here")
        live.append((i, j))
    need, kept = {n_values // 2}, []
    for i, j in reversed(live):
        if i in need or j in need:
            kept.append((i, j, i in need, j in need))
            need |= {i, j}
    return tuple(reversed(kept))


def median_blur(u: torch.Tensor, ksize: int, method: str | None = None) -> torch.Tensor:
    """cv::medianBlur of float (..., H, W), ksize 3 or 5, replicated border; exact either way.

    ``method`` "network": a min/max selection network (113 comparators for 5x5; fastest on a CPU, ~200 small
    kernels); "sort": the k*k window copied out and ``torch.median`` over it (2 kernels, ~4x fewer bytes moved:
    the better one on a GPU). None: "sort" on CUDA, "network" elsewhere.
    """
    method = method or ("sort" if u.is_cuda else "network")
    r = ksize // 2
    h, w = u.shape[-2:]
    lead = u.shape[:-2]
    pad = F.pad(u.reshape(-1, 1, h, w), (r, r, r, r), mode="replicate")
    if method == "sort":
        windows = pad.unfold(2, ksize, 1).unfold(3, ksize, 1)  # (N, 1, H, W, k, k) view
        return windows.reshape(*windows.shape[:4], ksize * ksize).median(dim=-1).values.reshape(*lead, h, w)
    if method != "network":
        raise ValueError(f"median_blur: method must be 'sort' or 'network', got {method!r}")
    wires = [pad[..., dy:dy + h, dx:dx + w] for dy in range(ksize) for dx in range(ksize)]
    for i, j, keep_min, keep_max in median_network(ksize * ksize):
        a, b = wires[i], wires[j]
        if keep_min:
            wires[i] = torch.minimum(a, b)
        if keep_max:
            wires[j] = torch.maximum(a, b)
    return wires[(ksize * ksize) // 2].reshape(*lead, h, w)


def _cubic_weights(frac: torch.Tensor) -> list[torch.Tensor]:
    """Keys' cubic convolution weights (A = -0.75, OpenCV's and torch's) of taps -1, 0, 1, 2 at offset ``frac``."""
    a = CUBIC_A
    x0 = frac + 1.0
    w0 = ((a * x0 - 5.0 * a) * x0 + 8.0 * a) * x0 - 4.0 * a
    w1 = ((a + 2.0) * frac - (a + 3.0)) * frac * frac + 1.0
    x2 = 1.0 - frac
    w2 = ((a + 2.0) * x2 - (a + 3.0)) * x2 * x2 + 1.0
    return [w0, w1, w2, 1.0 - w0 - w1 - w2]


def warp_bicubic(planes: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """cv::remap(planes, x + u1, y + u2, INTER_CUBIC, BORDER_CONSTANT 0) of (B, C, H, W) by flow (B, 2, H, W).

    Written out (16 gathers) rather than ``grid_sample``: the normalised grid of grid_sample loses ~1e-6
    px, which at zero flow makes I1(x + u) differ from I1 by ~1e-3 grey levels; in flat regions TV-L1 turns
    that into spurious motion. Here integer positions are exact, as in OpenCV.
    """
    b, c, h, w = planes.shape
    pad = 4  # a tap index clamped to [-3, W + 1] (resp. H) reads only zeros outside the image
    src = F.pad(planes, (pad, pad, pad, pad)).reshape(b, c, -1)
    wp = w + 2 * pad
    mx = torch.arange(w, device=u.device, dtype=u.dtype) + u[:, 0]
    my = torch.arange(h, device=u.device, dtype=u.dtype)[:, None] + u[:, 1]
    fx0, fy0 = torch.floor(mx), torch.floor(my)
    wx, wy = _cubic_weights(mx - fx0), _cubic_weights(my - fy0)
    ix = fx0.clamp(-3, w + 1).long() + pad
    iy = fy0.clamp(-3, h + 1).long() + pad
    out = torch.zeros((b, c, h * w), dtype=planes.dtype, device=planes.device)
    for ky in range(4):
        row = torch.zeros_like(out)
        base = (iy + (ky - 1)) * wp
        for kx in range(4):
            idx = (base + ix + (kx - 1)).reshape(b, 1, -1).expand(b, c, h * w)
            row += wx[kx].reshape(b, 1, -1) * src.gather(2, idx)
        out += wy[ky].reshape(b, 1, -1) * row
    return out.reshape(b, c, h, w)


def rgb_to_gray_u8(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) uint8 RGB -> (...) uint8 luma, bit-exact with cv2.cvtColor(COLOR_RGB2GRAY) (BT.601, 15-bit fixed point)."""
    x = rgb.to(torch.int32)
    y = (x[..., 0] * 9798 + x[..., 1] * 19235 + x[..., 2] * 3735 + (1 << 14)) >> 15
    return y.to(torch.uint8)


# ----- the solver -----------------------------------------------------------------------------------------------------------
class TorchTVL1:
    """Batched TV-L1 on ``device``: ``flow(I0, I1)`` for (B, H, W) frames; ``flow_pairs`` splits large inputs into batches.

    ``batch_size`` bounds memory (pairs solved at once); None picks it from the device's free memory
    (:func:`default_batch_size`). ``check_every``: iterations between convergence reads (1 on CPU).
    ``compile``: fuse the primal-dual step and the bicubic warp with ``torch.compile`` (one kernel each instead
    of ~33 and ~200 on a GPU; ~30 s of compilation per process; on this CPU it gains little). If compilation
    fails, it warns and runs eagerly. Off by default: not yet measured on a GPU (benchmarks/bench_flow.py --compile).
    """

    def __init__(self, params: TVL1Params | None = None, device: str | torch.device | None = None, batch_size: int | None = None,
                 check_every: int | None = None, compile: bool = False) -> None:
        self.params = params or TVL1Params()
        self.device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"TorchTVL1: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.check_every = check_every or (1 if self.device.type == "cpu" else 10)
        self.stats = FlowStats()
        self._fns = {f.__name__: torch.compile(f, dynamic=None) if compile else f for f in (_iteration, warp_bicubic)}

    def _call(self, fn, *args):
        """``fn`` (compiled when asked); a compiler failure (no triton, no C++ compiler) falls back to eager: same numbers."""
        try:
            return self._fns[fn.__name__](*args)
        except Exception as exc:  # noqa: BLE001
            if self._fns[fn.__name__] is fn:
                raise
            log.warning("torch.compile of %s failed (%s: %s); running it eagerly", fn.__name__, type(exc).__name__, exc)
            self._fns[fn.__name__] = fn
            return fn(*args)

    def batch_size_for(self, height: int, width: int) -> int:
        return self.batch_size or default_batch_size(self.device, height, width)

    @torch.inference_mode()
    def flow_pairs(self, first: torch.Tensor | np.ndarray, second: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Flow of N pairs (N, H, W) -> (N, 2, H, W) float32 on ``self.device``, ``batch_size`` pairs at a time."""
        first, second = _as_frames(first, self.device, "first"), _as_frames(second, self.device, "second")
        if first.shape != second.shape:
            raise ValueError(f"TV-L1 needs frame pairs of one shape, got {tuple(first.shape)} and {tuple(second.shape)}")
        n, h, w = first.shape
        step = self.batch_size_for(h, w)
        out = torch.empty((n, 2, h, w), dtype=torch.float32, device=self.device)
        for start in range(0, n, step):
            out[start:start + step] = self.flow(first[start:start + step], second[start:start + step])
        return out

    @torch.inference_mode()
    def flow(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """One batch: (B, H, W) frames in 0..255 (uint8 or float) -> (B, 2, H, W) float32 flow in pixels."""
        p = self.params
        i0 = _as_frames(first, self.device, "first").float()
        i1 = _as_frames(second, self.device, "second").float()
        b, h, w = i0.shape
        if min(h, w) < 3:
            raise ValueError(f"TV-L1 needs frames of at least 3x3 pixels, got {h}x{w}")
        sizes = pyramid_sizes(h, w, p)
        levels = [(i0, i1)]
        for size in sizes[1:]:
            prev0, prev1 = levels[-1]
            both = resize_linear(torch.stack((prev0, prev1)), size, (p.scale_step, p.scale_step))
            levels.append((both[0], both[1]))
        stats = FlowStats(pairs=b, per_level=[0] * len(sizes))
        u = torch.zeros((b, 2, *sizes[-1]), dtype=torch.float32, device=self.device)
        for level in range(len(sizes) - 1, -1, -1):
            u = self._one_scale(levels[level][0], levels[level][1], u, stats, level)
            if level:
                u = resize_linear(u, sizes[level - 1]) * (1.0 / p.scale_step)
        self.stats.add(stats)
        return u

    def _one_scale(self, i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, stats: FlowStats, level: int) -> torch.Tensor:
        p = self.params
        b, h, w = i0.shape
        scaled_epsilon = float(np.float32(p.epsilon * p.epsilon * h * w))
        l_t, taut = float(np.float32(p.lambda_ * p.theta)), float(np.float32(p.tau / p.theta))
        theta = float(np.float32(p.theta))
        i1x, i1y = centered_gradient(i1)
        planes = torch.stack((i1, i1x, i1y), dim=1)  # (B, 3, H, W): warped together
        dual = torch.zeros((b, 2, 2, h, w), dtype=torch.float32, device=i0.device)  # [flow component, (x, y)]
        for _ in range(p.warps):
            warped = self._call(warp_bicubic, planes, u)
            i1w, iw = warped[:, 0:1], warped[:, 1:3]  # (B, 1, H, W), (B, 2, H, W) = (I1wx, I1wy)
            ix, iy = iw[:, 0:1], iw[:, 1:2]
            grad = ix * ix + iy * iy
            rho_c = i1w - ix * u[:, 0:1] - iy * u[:, 1:2] - i0[:, None]
            thr = l_t * grad
            neg_grad = -grad.clamp_min(torch.finfo(torch.float32).tiny)
            grad_big = grad > FLOAT_EPSILON
            active = torch.ones(b, dtype=torch.bool, device=i0.device)
            active_count = torch.zeros((), dtype=torch.long, device=i0.device)  # summed on the device: no sync per step
            done = False
            n = 0
            for _outer in range(p.outer_iterations):
                if p.median_filtering > 1:
                    u = torch.where(active[:, None, None, None], median_blur(u, p.median_filtering), u)
                for _inner in range(p.inner_iterations):
                    u, dual, err = self._call(_iteration, u, dual, ix, iy, iw, thr, neg_grad, grad_big, rho_c, l_t, theta, taut, active)
                    active_count += active.sum()
                    active = active & (err > scaled_epsilon)
                    n += 1
                    if n % self.check_every == 0 and not bool(active.any()):
                        done = True
                        break
                if done or not bool(active.any()):
                    break
            count = int(active_count)
            stats.pair_iterations += count
            stats.per_level[level] += count
            stats.batch_iterations += n
        return u


def _iteration(u, dual, ix, iy, iw, thr, neg_grad, grad_big, rho_c, l_t: float, theta: float, taut: float, active):
    """One primal-dual step for the whole batch; pairs not ``active`` keep their u and p. Returns (u, p, error per pair).

    The thresholding step is OpenCV's three cases in one expression: -rho/|grad I|^2 clamped to
    [-lambda*theta, lambda*theta] gives +-lambda*theta exactly when |rho| > lambda*theta*|grad I|^2, and the
    quotient otherwise; where |grad I|^2 <= FLT_EPSILON and |rho| is below the threshold, the step is 0.
    """
    rho = rho_c + (ix * u[:, 0:1] + iy * u[:, 1:2])
    step = torch.where(grad_big | (rho.abs() > thr), (rho / neg_grad).clamp(-l_t, l_t), 0.0)
    v = u + step * iw
    u_new = v + theta * divergence(dual[:, :, 0], dual[:, :, 1])
    err = (u_new - u).square().sum(dim=(1, 2, 3))
    ux, uy = forward_gradient(u_new)
    norm = 1.0 + taut * torch.hypot(ux, uy)
    dual_new = (dual + taut * torch.stack((ux, uy), dim=2)) / norm[:, :, None]
    keep = active[:, None, None, None]
    return torch.where(keep, u_new, u), torch.where(keep[..., None], dual_new, dual), err


def _as_frames(frames: torch.Tensor | np.ndarray, device: torch.device, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if t.ndim != 3:
        raise ValueError(f"TV-L1 {name} frames must be (N, H, W) grayscale, got shape {tuple(t.shape)}")
    return t.to(device, non_blocking=True)


def default_batch_size(device: torch.device | str, height: int, width: int) -> int:
    """Pairs per batch: half the free device memory over ~BYTES_PER_PIXEL per pixel (CUDA); 8 on CPU (see bench_flow)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 8
    free_b, _total_b = torch.cuda.mem_get_info(device)
    per_pair_b = BYTES_PER_PIXEL * height * width
    return max(1, min(MAX_DEFAULT_BATCH, int(free_b * 0.5 // per_pair_b)))


def flow_numpy(prev_gray: np.ndarray, next_gray: np.ndarray, solver: TorchTVL1 | None = None) -> np.ndarray:
    """One pair as ``flow.FlowEstimator`` does it: two (H, W) uint8 frames -> (H, W, 2) float32 pixels."""
    solver = solver or TorchTVL1(device="cpu")
    out = solver.flow_pairs(prev_gray[None], next_gray[None])[0]
    return out.permute(1, 2, 0).cpu().numpy()


def pyramid_area_factor(params: TVL1Params, height: int, width: int) -> float:
    """Sum of the pyramid levels' areas over the full level's (cost of one iteration per level, relative)."""
    return sum(h * w for h, w in pyramid_sizes(height, width, params)) / float(height * width)


__all__ = [
    "TVL1Params", "TorchTVL1", "FlowStats", "default_batch_size", "flow_numpy", "pyramid_sizes", "resize_linear",
    "warp_bicubic", "median_blur", "centered_gradient", "forward_gradient", "divergence", "rgb_to_gray_u8",
]
