"""Range selection from a histogram, shared by both backends' entropy method."""
from __future__ import annotations

import numpy as np


def kl_range(edges: np.ndarray, hist: np.ndarray, levels: int = 256,
             candidates: int = 96) -> tuple[float, float]:
    """(lo, hi) minimizing KL(P || Q) where P is the histogram clipped to [lo, hi]
    (outliers folded into the end bins) and Q its `levels`-level quantization."""
    n = len(hist)
    total = hist.sum()
    if total <= 0 or n <= levels:
        return float(edges[0]), float(edges[-1])
    zero = int(np.clip(np.searchsorted(edges, 0.0), 0, n))
    best, best_kl = (float(edges[0]), float(edges[-1])), np.inf
    for width in np.unique(np.linspace(levels, n, candidates).astype(int)):
        frac = width / n  # shrink both sides in proportion, keeping zero inside
        a = int(round(zero - zero * frac))
        b = int(round(zero + (n - zero) * frac))
        a, b = max(0, a), min(n, max(b, a + levels))
        sliced = hist[a:b].astype(np.float64)
        p = sliced.copy()  # reference: clipped, the outliers folded into the end bins
        p[0] += hist[:a].sum()
        p[-1] += hist[b:].sum()
        m = len(p)
        bounds = np.unique(np.linspace(0, m, levels + 1).astype(int))
        # candidate: the window without the outliers, merged into `levels` levels and
        # spread back over the non-empty bins; the folded mass is what it lacks
        sums = np.add.reduceat(sliced, bounds[:-1])
        nz = (p > 0).astype(np.float64)
        nzc = np.add.reduceat(nz, bounds[:-1])
        per = np.divide(sums, nzc, out=np.zeros_like(sums), where=nzc > 0)
        q = np.repeat(per, np.diff(bounds)) * nz
        ps, qs = p / p.sum(), q / max(q.sum(), 1e-12)
        mask = ps > 0
        kl = float(np.sum(ps[mask] * np.log(ps[mask] / np.maximum(qs[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best = kl, (float(edges[a]), float(edges[b]))
    lo, hi = best
    return min(lo, 0.0) if edges[0] < 0 else float(edges[0]), max(hi, 0.0)
