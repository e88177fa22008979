"""Index kinds and the IVF-PQ parameters: defaults, and whether a gallery is large enough."""
from __future__ import annotations

import math

KINDS = ("flat", "ivfpq")
REFINES = ("none", "fp16", "flat")  # re-ranking of IVF-PQ candidates with stored vectors
# FAISS k-means wants >= 39 training points per centroid (it warns below that); the same
# holds for each of the 2**nbits centroids of every PQ sub-quantizer.
MIN_POINTS_PER_CENTROID = 39


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: about 4 * sqrt(n)."""
    return max(1, int(round(4 * math.sqrt(n))))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: ~nlist/32 (>= 16), a recall/speed balance for large galleries."""
    return int(min(nlist, max(16, nlist // 32)))


def default_pq_m(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of ``dim`` that is <= 64 (64 bytes/vector)."""
    return max(d for d in range(1, min(dim, 64) + 1) if dim % d == 0)


def ivfpq_params(
    n: int, dim: int, nlist: int | None, m: int | None, nbits: int, nprobe: int | None,
    refine: str, k_factor: int,
) -> tuple[dict | None, str]:
    """Choose/validate IVF-PQ parameters; returns (params, "") or (None, why not).

    Raises:
        ValueError: a parameter that no gallery size can make valid (``m``, ``refine``, ``k_factor``).
    """
    need_pq = MIN_POINTS_PER_CENTROID * (2**nbits)
    if n < need_pq:
        return None, (f"{n} vectors are too few to train PQ codebooks with nbits={nbits} "
                      f"(need >= {need_pq})")
    if nlist is None:
        nlist = min(default_nlist(n), n // MIN_POINTS_PER_CENTROID)
    elif n < MIN_POINTS_PER_CENTROID * nlist:
        return None, (f"{n} vectors are too few to train nlist={nlist} lists "
                      f"(need >= {MIN_POINTS_PER_CENTROID * nlist}); lower --nlist")
    m = default_pq_m(dim) if m is None else m
    if dim % m:
        raise ValueError(f"--m {m} must divide the dimension {dim}")
    nprobe = default_nprobe(nlist) if nprobe is None else min(int(nprobe), nlist)
    if refine not in REFINES:
        raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
    if k_factor < 1:
        raise ValueError(f"k_factor must be >= 1, got {k_factor}")
    return {"nlist": int(nlist), "m": int(m), "nbits": int(nbits), "nprobe": int(nprobe),
            "refine": refine, "k_factor": int(k_factor)}, ""
