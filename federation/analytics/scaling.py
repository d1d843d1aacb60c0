"""Fitting local vectors into SecAgg+'s range: public scales, client checks, a simulated sum.

SecAgg+ sums integer vectors: each node clips its entries to ``[-C, C]`` (``C`` the
clipping range), quantises them to ``quantization_range`` steps and the server
dequantises the sum. Nothing that is summed may therefore exceed ``C`` in absolute
value, and the absolute error of a summed entry is about ``K * 2C / quantization_range``
for ``K`` nodes. Every local vector is divided entry-wise by a job-wide *public*
scale (derived from the spec and public bounds only, never from another node's data)
before it is sent, checked on the client (:func:`scale_for_secagg` raises
:class:`~federation.errors.ValueRangeError` rather than letting Flower clip silently),
and multiplied back by the same scale after the sum (:func:`unscale`).
"""

from __future__ import annotations

import numpy as np

from federation.errors import ValueRangeError

__all__ = [
    "dequantize_sum",
    "quantisation_sd",
    "quantize_vector",
    "scale_for_secagg",
    "simulate_secure_sum",
    "unscale",
]


def scale_for_secagg(
    vector: np.ndarray, scale: np.ndarray | float, clipping_range: float
) -> np.ndarray:
    """Divide ``vector`` by the public ``scale`` and check it fits SecAgg+'s range.

    Returns:
        The scaled vector (float64), every entry within ``[-clipping_range, clipping_range]``.

    Raises:
        ValueRangeError: an entry is NaN/inf, a scale is not positive, or a scaled entry
            exceeds the clipping range (the public bound behind the scale was too small).

    """
    vec = np.asarray(vector, dtype=np.float64)
    sc = np.broadcast_to(np.asarray(scale, dtype=np.float64), vec.shape)
    if not np.all(np.isfinite(sc)) or np.any(sc <= 0):
        raise ValueRangeError("every public scale must be a positive finite number")
    if not np.all(np.isfinite(vec)):
        raise ValueRangeError("the local vector contains NaN or infinity")
    scaled = vec / sc
    peak = np.abs(scaled)
    if scaled.size and float(peak.max()) > clipping_range:
        i = int(peak.argmax())
        raise ValueRangeError(
            f"entry {i}: scaled |value| {peak[i]:.4g} exceeds the clipping range "
            f"{clipping_range:g} (value {vec[i]:.6g}, public scale {sc[i]:.6g})"
        )
    return scaled


def unscale(summed: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """Multiply a securely summed, scaled vector back by the public ``scale``."""
    return np.asarray(summed, dtype=np.float64) * np.asarray(scale, dtype=np.float64)


def quantisation_sd(scale: np.ndarray | float, resolution: float, n_nodes: int) -> np.ndarray:
    """Return the SD of each entry's quantisation error in an unscaled secure sum.

    Each node rounds every scaled entry stochastically to a grid of step ``resolution``:
    an error of mean 0 and variance at most ``resolution² / 4``. Over ``n_nodes``
    independent nodes the variance adds up; :func:`unscale` multiplies it by ``scale²``.
    This is an upper bound (the bound is reached when every entry falls mid-step).
    """
    return np.sqrt(float(n_nodes)) * resolution / 2.0 * np.asarray(scale, dtype=np.float64)


def quantize_vector(
    vector: np.ndarray, clipping_range: float, quantization_range: int, rng: np.random.Generator
) -> np.ndarray:
    """Quantise like Flower's ``quantize``: clip to ``[-C, C]``, shift, stochastic rounding.

    Returns:
        Integers in ``[0, quantization_range]`` (int64).

    """
    quantizer = quantization_range / (2 * clipping_range)
    pre = (np.clip(vector, -clipping_range, clipping_range) + clipping_range) * quantizer
    ceil = np.ceil(pre).astype(np.int64)
    ceil[rng.random(ceil.shape) < ceil - pre] -= 1
    return ceil


def dequantize_sum(
    quantized_sum: np.ndarray, n_nodes: int, clipping_range: float, quantization_range: int
) -> np.ndarray:
    """Dequantise a sum of ``n_nodes`` quantised vectors like Flower's SecAgg+ workflow."""
    step = 2 * clipping_range / quantization_range
    return quantized_sum.astype(np.float64) * step - clipping_range - (n_nodes - 1) * clipping_range


def simulate_secure_sum(
    vectors: list[np.ndarray],
    clipping_range: float,
    quantization_range: int = 2**30,
    rng: np.random.Generator | None = None,
    modulus_range: int = 2**32,
) -> np.ndarray:
    """Return the sum SecAgg+ would deliver for ``vectors`` (each node weighted 1).

    Mirrors ``flwr.common.secure_aggregation.quantization`` and the workflow's
    unmasking (modular sum, dequantise, shift by ``-(K-1)C``); masks cancel and are
    left out. Entries outside ``[-C, C]`` are clipped silently, as Flower does.
    """
    rng = rng if rng is not None else np.random.default_rng()
    total = np.zeros(np.asarray(vectors[0]).shape, dtype=np.int64)
    for vec in vectors:
        total = (
            total + quantize_vector(np.asarray(vec, float), clipping_range, quantization_range, rng)
        ) % modulus_range
    return dequantize_sum(total, len(vectors), clipping_range, quantization_range)
