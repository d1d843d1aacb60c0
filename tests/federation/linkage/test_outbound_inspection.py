"""Outbound inspection of a linked job: every byte the holders send, by PSI and by MPC.

The PSI messages go through the alignment's relay and every MPC connection through a
recording TCP relay in front of each party's listener, so nothing a party sends escapes
the capture. No pseudonym (as text or as raw bytes), no row value (as text, as a float,
or in MPyC's fixed-point field encoding, both as MPyC sends field elements: fixed-width
little-endian for scalars, pickled integers for arrays) and no label appears; the field
elements the parties exchange look uniform.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
from scipy import stats as sps

from federation.linkage.linked_run import HolderTable, linked_glm
from tests.federation.linkage.wire_capture import RecordingRelay

RANGES = {"bmi": (14.0, 40.0), "age": (16.0, 48.0), "dairy": (0.0, 600.0)}
FRAC = 32  # fixed-point fractional bits of the linked computation


def _field() -> tuple[int, int]:
    """Return the byte length and modulus of the field the linked GLM computes in."""
    code = ("from mpyc.runtime import mpc; f = mpc.SecFxp(96, 32).field; "
            "print(f.byte_length, f.modulus)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[0]), int(out[1])


def _encodings(value: int, r: int, p: int) -> tuple[bytes, bytes]:
    """Return a field element as MPyC puts it on the wire: fixed width, and pickled."""
    v = value % p
    return v.to_bytes(r, "little"), pickle.dumps(v, 2)[2:-1]


def _elements(payload: bytes, r: int) -> list[int]:
    """Return the field elements of one MPyC frame's payload."""
    if payload[:1] == b"\x80":  # a pickled array of field elements
        return [int(v) for v in np.asarray(pickle.loads(payload)).ravel()]  # noqa: S301
    assert len(payload) % r == 0
    return [int.from_bytes(payload[i : i + r], "little") for i in range(0, len(payload), r)]


def _holders(n: int) -> tuple[list[HolderTable], pd.DataFrame]:
    rng = np.random.default_rng(21)
    ids = [rng.bytes(16).hex() for _ in range(n)]
    bmi, age, dairy = rng.uniform(16, 34, n), rng.uniform(18, 44, n), rng.uniform(0, 500, n)
    y = (rng.random(n) < 1 / (1 + np.exp(1.0 + 0.1 * (bmi - 22)))).astype(float)
    full = pd.DataFrame({"subject": ids, "y": y, "bmi": bmi, "age": age, "dairy": dairy})
    hosp = full[["subject", "y", "bmi"]]
    city = full[["subject", "age"]].iloc[5:]
    dairy_co = full[["subject", "dairy"]].iloc[: n - 5]
    return [HolderTable("hospital", hosp), HolderTable("city", city),
            HolderTable("dairy", dairy_co)], full


def test_a_linked_glm_sends_no_pseudonym_row_value_or_label_in_the_clear() -> None:
    holders, full = _holders(160)
    psi_sent: list[bytes] = []

    def relay(_sender: str, _receiver: str, payload: bytes) -> bytes:
        psi_sent.append(payload)
        return payload

    wire = RecordingRelay()
    try:
        res = linked_glm(holders, key="subject", outcome="y", terms=["bmi", "age", "dairy"],
                         family="binomial", ranges=RANGES, relay=relay, mpc_route=wire.route)
    finally:
        wire.close()
    assert res["linked_n"] == 150
    mpc = b"".join(bytes(data) for _k, _d, data in wire.streams)
    both = b"".join(psi_sent) + mpc
    assert len(psi_sent) >= 6 and len(mpc) > 100_000
    for s in full["subject"]:  # the pseudonym as text and as the 16 bytes it encodes
        assert s.encode() not in both and bytes.fromhex(s) not in both
    r, p = _field()
    for col in RANGES:
        lo, hi = RANGES[col]
        for x in full[col]:
            z = (x - (lo + hi) / 2) / ((hi - lo) / 2)  # the scaled term a holder shares
            for enc in _encodings(round(z * 2**FRAC), r, p):
                assert enc not in mpc
            assert struct.pack("<d", x) not in both and repr(float(x)).encode() not in both
    y = full["y"].to_numpy()
    for enc in _encodings(1 << FRAC, r, p):  # a label 1 in fixed point
        assert mpc.count(enc) == 0
    assert y.astype(np.float64).tobytes()[:64] not in both
    assert y.astype(np.uint8).tobytes()[:64] not in both
    # The field elements sent (Shamir shares, and masked values whose low bits the PRSS
    # mask makes uniform): the low 4 bytes of each look uniform.
    values = [v for pl in wire.payloads() for v in _elements(pl, r)]
    assert len(values) > 20_000 and all(0 <= v < p for v in values)
    low = np.frombuffer(b"".join((v & 0xFFFFFFFF).to_bytes(4, "little") for v in values),
                        dtype=np.uint8)
    assert sps.chisquare(np.bincount(low, minlength=256)).pvalue > 1e-6
