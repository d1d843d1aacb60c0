"""Start an MPyC party in this process, with a cheaper probabilistic truncation.

MPyC reads its configuration from ``sys.argv`` when ``mpyc.runtime`` is first imported,
so a party runs in a process of its own (:mod:`federation.linkage.mpc_party`) that sets
the arguments before the import; nothing else in Hamanasu imports ``mpyc.runtime``.

Truncation. A fixed-point product carries twice the fractional bits and must be
truncated. MPyC's own ``np_trunc`` builds the random mask's low part from ``f`` secret
random bits, each costing an opened square: about 0.9 KB of traffic per truncated
element at 32 fractional bits. :func:`install_prss_truncation` replaces it, in this party
only, by the same Catrina–de Hoogh probabilistic truncation with the low mask taken from
pseudorandom secret sharing: every one of the ``C(m, t)`` PRSS keys contributes a
uniform value below ``2**f``, so the mask is uniform modulo ``2**f`` to any ``t``
colluding parties (each misses at least one key) and the opened value hides the
truncated bits exactly as before; the high mask is MPyC's own statistical one. The price
is rounding: the result is ``floor(x / 2**f)`` plus up to ``C(m, t) - 1`` units in the
last place (centred by subtracting half of that), instead of at most one. One opening
per element remains, a twentieth of the traffic.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Sequence
from typing import Any

__all__ = ["install_prss_truncation", "start_runtime"]


def start_runtime(pid: int, addresses: Sequence[str], *, threshold: int | None = None) -> Any:
    """Return the MPyC runtime of party ``pid`` among ``addresses`` (``host:port`` each).

    Must run before anything else imports ``mpyc.runtime`` in this process.

    Raises:
        ValueError: fewer than three parties (Shamir sharing with two parties protects
            nothing: the threshold would be 0), or ``pid`` out of range.

    """
    if len(addresses) < 3:
        raise ValueError(f"secure computation needs at least three parties, got {len(addresses)}")
    if not 0 <= pid < len(addresses):
        raise ValueError(f"party index {pid} out of range")
    argv = [sys.argv[0], "--log-level", "warning", "-I", str(pid)]
    for a in addresses:
        argv += ["-P", a]
    if threshold is not None:
        argv += ["-T", str(threshold)]
    sys.argv = argv
    from mpyc.runtime import mpc

    install_prss_truncation(mpc)
    return mpc


def install_prss_truncation(mpc: Any) -> None:
    """Replace ``mpc.np_trunc`` by the PRSS-masked truncation described in the module doc."""
    from mpyc import asyncoro

    # No return annotation: MPyC's decorator reads it as the result's type.
    @asyncoro.mpc_coro
    async def np_trunc(self, a, f=None, l=None):  # type: ignore[no-untyped-def]  # noqa: E741
        n = a.size
        sftype = type(a)
        if issubclass(sftype, self.SecureObject):
            await self.returnType((sftype, a.shape))
            field = sftype.sectype.field
            l = l or sftype.sectype.bit_length  # noqa: E741
            if f is None:
                f = sftype.frac_length
            if issubclass(sftype, self.SecureFixedPoint):
                l += f  # noqa: E741
        else:
            await self.returnType(asyncoro.Future)
            field = sftype.field
        assert f is not None and l is not None
        k = self.options.sec_param
        m, t = len(self.parties), self.threshold
        d = t + 1 if self.options.no_prss else math.comb(m, t)
        r_low = self._np_randoms(field, n, d << f)  # d summands, each uniform below 2**f
        r_high = self._np_randoms(field, n, 1 << k + l - f)
        if self.options.no_prss:
            r_low = await r_low
            r_high = await r_high
        low = r_low.value.reshape(a.shape)
        high = r_high.value.reshape(a.shape)
        if issubclass(sftype, self.SecureObject):
            a = await self.gather(a)
        ar = a.value + low
        c = await self.output(field.array(ar + (1 << l - 1) + (high << f)))
        c = c.value & ((1 << f) - 1)
        y = field.array(ar - c) >> f
        return y - (d - 1) // 2

    mpc.np_trunc = types.MethodType(np_trunc, mpc)
