"""Outbound inspection: record everything a node sends and look for what must not leave it.

An auditor's harness for the tests, not part of a production run. It has three parts:

* recorders: :func:`recording_mod` is a ClientApp mod that writes every reply a node sends
  to a folder (placed first in the mod list it sees the reply as it leaves the node, after
  ``secaggplus_mod`` masked it; placed last it sees the plain reply, before masking, which
  is how the node's own plain update is captured as a secret); :func:`recording_server_app`
  wraps a ServerApp so every reply the server receives through the grid is recorded;
  :func:`body_items` turns an HTTP body into items the same way.
* :func:`message_items` flattens a Flower message into :class:`OutboundItem` values (every
  array, config and metric value, decoded ndarray bytes, error reasons).
* :func:`inspect_outbound` checks the items against each node's :class:`NodeSecrets` and
  returns :class:`Finding` objects: a pseudonym anywhere (hex text or raw bytes), a long
  run of a node's record-level column values in any numeric array, a node's plain update
  (or plain evaluation vector) in the clear, an array sent outside SecAgg+'s masked
  vectors, a masked vector that does not look masked, or any config/metric key that is
  not on the explicit list of what a node may send in the clear (:data:`ALLOWED_CLEAR`).
"""

from __future__ import annotations

import json
import pickle
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp
    from flwr.server import ServerApp

__all__ = [
    "ALLOWED_CLEAR",
    "ALLOWED_CLEAR_PREFIXES",
    "Finding",
    "NodeSecrets",
    "OutboundItem",
    "allowed_clear_key",
    "body_items",
    "inspect_outbound",
    "load_recorded",
    "message_items",
    "recording_mod",
    "recording_server_app",
    "with_mods",
]

#: What a node sends in the clear, by record path (``<record>/<key>``); everything else a
#: node sends outside SecAgg+'s masked vectors is a finding. ``fitres.metrics``: the node's
#: name, the ε it has spent and the rows its per-resident cap dropped (the coordinator
#: needs them for the job report);
#: ``complete_case.*``: the rows a complete-case read kept and dropped, per column the
#: rows missing a value (:mod:`federation.complete_case`; a count from 1 to 9 goes out
#: as -1, anything else is a ``small_count`` finding);
#: ``fitres.num_examples``: its training-set size (FedAvg's weight; SecAgg+ also needs it);
#: ``fitres.status``: Flower's status code and message. ``secaggplus``: the protocol's own
#: fields (public keys, encrypted shares, node ids, masked vectors, unmasking shares).
ALLOWED_CLEAR: frozenset[str] = frozenset(
    {
        "config_records/fitres.metrics/node",
        "config_records/fitres.metrics/epsilon",
        "config_records/fitres.metrics/rows_dropped",
        "config_records/fitres.metrics/complete_case.rows_read",
        "config_records/fitres.metrics/complete_case.rows_dropped",
        "metric_records/fitres.num_examples/num_examples",
        "config_records/fitres.status/code",
        "config_records/fitres.status/message",
        "config_records/secaggplus_configs/pk1",
        "config_records/secaggplus_configs/pk2",
        "config_records/secaggplus_configs/dsts",
        "config_records/secaggplus_configs/ctxts",
        "config_records/secaggplus_configs/masked_params",
        "config_records/secaggplus_configs/nids",
        "config_records/secaggplus_configs/shares",
    }
)

#: Keys allowed in the clear with any suffix: a complete-case count per column the job needs.
ALLOWED_CLEAR_PREFIXES: tuple[str, ...] = ("config_records/fitres.metrics/complete_case.missing.",)

#: Counts that leave a node only as -1 when small (:data:`federation.complete_case.SMALL_COUNT`).
SMALL_COUNT_PREFIX = "config_records/fitres.metrics/complete_case."


def allowed_clear_key(key: str, allowed_clear: frozenset[str] = ALLOWED_CLEAR) -> bool:
    """Return True if a node may send ``key`` (a record path) in the clear."""
    return key in allowed_clear or key.startswith(ALLOWED_CLEAR_PREFIXES)


#: Record paths whose values are SecAgg+'s masked vectors (decoded ndarray bytes).
MASKED_PATHS: frozenset[str] = frozenset({"config_records/secaggplus_configs/masked_params"})

_HEX32 = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{32}(?![0-9a-fA-F])")
_HEX32_B = re.compile(rb"(?<![0-9a-fA-F])[0-9a-fA-F]{32}(?![0-9a-fA-F])")


@dataclass(frozen=True)
class OutboundItem:
    """One value a node sent.

    Attributes:
        source: where it was recorded (``node-out``: leaving the node; ``server``: received
            through the grid; ``http``: an HTTP body).
        sender: the sending node (name, partition id or Flower node id).
        message_type: Flower's message type (``train``...) or the HTTP method and path.
        path: ``<kind>/<record>/<key>`` (``[i]`` for list elements).
        value: an ndarray, a str, bytes, or a number.
    """

    source: str
    sender: str
    message_type: str
    path: str
    value: Any

    @property
    def key(self) -> str:
        """Return the path without list indices (what :data:`ALLOWED_CLEAR` lists)."""
        return re.sub(r"\[\d+\]", "", self.path)


@dataclass(frozen=True)
class NodeSecrets:
    """What must never leave one node in the clear.

    Attributes:
        name: the node.
        columns: record-level values, one array per column (raw and as the model sees them).
        pseudonyms: the subjects' pseudonyms (32 hex digits) held by the node.
        updates: the node's plain per-round arrays (parameters and evaluation vector),
            as captured on the node before masking.
    """

    name: str
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    pseudonyms: frozenset[str] = frozenset()
    updates: Sequence[np.ndarray] = ()


@dataclass(frozen=True)
class Finding:
    """Something a node sent that it must not send in the clear."""

    kind: str
    node: str
    source: str
    sender: str
    path: str
    detail: str


# -- flattening ------------------------------------------------------------------------------


def _decode_ndarray(value: bytes) -> np.ndarray | None:
    """Return the ndarray serialised in ``value`` (Flower's ``ndarray_to_bytes``), if it is one."""
    if not value.startswith(b"\x93NUMPY"):
        return None
    from flwr.common import bytes_to_ndarray

    try:
        return np.asarray(bytes_to_ndarray(value))
    except Exception:  # noqa: BLE001 - not an ndarray after all
        return None


def _value_items(base: OutboundItem, value: Any) -> list[OutboundItem]:
    """Flatten one record value into items (lists element-wise, bytes also decoded)."""

    def make(path: str, v: Any) -> OutboundItem:
        return OutboundItem(base.source, base.sender, base.message_type, path, v)

    if isinstance(value, list | tuple):
        if value and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return [make(base.path, np.asarray(value, dtype=np.float64))]
        out: list[OutboundItem] = []
        for i, v in enumerate(value):
            out.extend(_value_items(make(f"{base.path}[{i}]", None), v))
        return out
    if isinstance(value, bytes):
        out = [make(base.path, value)]
        arr = _decode_ndarray(value)
        if arr is not None:
            out.append(make(base.path, arr))
        return out
    if isinstance(value, np.ndarray):
        return [make(base.path, value)]
    return [make(base.path, value)]


def message_items(message: Message, source: str, sender: str) -> list[OutboundItem]:
    """Flatten a Flower message into items: arrays, config and metric values, error reason."""
    mtype = str(getattr(message.metadata, "message_type", ""))
    items: list[OutboundItem] = []
    if message.has_error():
        err = message.error
        items.append(OutboundItem(source, sender, mtype, "error/reason", str(err.reason)))
        return items
    content = message.content
    for name, arrays in content.array_records.items():
        for key, arr in arrays.items():
            path = f"array_records/{name}/{key}"
            items.append(OutboundItem(source, sender, mtype, path, arr.numpy()))
    records: list[tuple[str, Mapping[str, Any]]] = [
        *((f"config_records/{n}", r) for n, r in content.config_records.items()),
        *((f"metric_records/{n}", r) for n, r in content.metric_records.items()),
    ]
    for prefix, record in records:
        for key, value in record.items():
            base = OutboundItem(source, sender, mtype, f"{prefix}/{key}", None)
            items.extend(_value_items(base, value))
    return items


def body_items(body: bytes | str, source: str, sender: str, label: str) -> list[OutboundItem]:
    """Flatten an HTTP body (JSON if it parses, else raw text/bytes) into items."""
    raw = body.encode() if isinstance(body, str) else body
    items = [OutboundItem(source, sender, label, "body", raw)]
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return items

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                items.append(OutboundItem(source, sender, label, f"{path}/{k}#key", str(k)))
                walk(v, f"{path}/{k}")
        elif isinstance(obj, list):
            if obj and all(isinstance(v, int | float) and not isinstance(v, bool) for v in obj):
                items.append(
                    OutboundItem(source, sender, label, path, np.asarray(obj, dtype=np.float64))
                )
            else:
                for i, v in enumerate(obj):
                    walk(v, f"{path}[{i}]")
        else:
            items.append(OutboundItem(source, sender, label, path, obj))

    walk(doc, "json")
    return items


# -- recorders ---------------------------------------------------------------------------------


def _sender(context: Context) -> str:
    cfg = context.node_config
    return str(cfg.get("node-name") or cfg.get("partition-id", context.node_id))


def recording_mod(folder: Path, source: str, *, drop_received: bool = False) -> Callable[..., Any]:
    """Return a ClientApp mod that writes every reply's items to ``folder`` (one pickle each).

    ``folder`` must be reachable from the node's process (simulation actors are other
    processes). With ``drop_received``, arrays equal to one the node received in the same
    message (the global model echoed back) are left out: what remains is the node's own.
    """
    folder = Path(folder)

    def mod(message: Message, context: Context, call_next: Callable[..., Message]) -> Message:
        reply = call_next(message, context)
        items = message_items(reply, source, _sender(context))
        if drop_received and message.has_content():
            received = [
                a.numpy() for rec in message.content.array_records.values() for a in rec.values()
            ]
            items = [
                it
                for it in items
                if not (
                    isinstance(it.value, np.ndarray)
                    and any(
                        r.shape == it.value.shape and np.array_equal(r, it.value) for r in received
                    )
                )
            ]
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(pickle.dumps(items))
        tmp.rename(folder / f"{source}-{uuid.uuid4().hex}.pkl")
        return reply

    return mod


def load_recorded(folder: Path) -> list[OutboundItem]:
    """Return every item that :func:`recording_mod` wrote to ``folder``."""
    items: list[OutboundItem] = []
    for path in sorted(Path(folder).glob("*.pkl")):
        items.extend(pickle.loads(path.read_bytes()))  # noqa: S301 - our own harness's files
    return items


def with_mods(
    build: Callable[..., ClientApp],
    *args: Any,
    before: Sequence[Any] = (),
    after: Sequence[Any] = (),
    **kwargs: Any,
) -> ClientApp:
    """Call ``build(*args, **kwargs)`` and return its ClientApp with extra mods around its own.

    ``before`` mods wrap the app's mods (they see replies as they leave the node); ``after``
    mods sit inside them (they see the plain reply before ``secaggplus_mod`` masks it). A
    ClientApp keeps no public handle on its ``client_fn``, so the one ``build`` creates is
    captured as it is constructed and rebuilt with the extra mods.
    """
    import flwr.clientapp as clientapp

    real = clientapp.ClientApp
    captured: dict[str, Any] = {}

    class _Capture:
        def __init__(self, client_fn: Any = None, mods: Sequence[Any] | None = None) -> None:
            captured.update(client_fn=client_fn, mods=list(mods or []))

    clientapp.ClientApp = _Capture  # type: ignore[misc,assignment]
    try:
        build(*args, **kwargs)
    finally:
        clientapp.ClientApp = real  # type: ignore[misc]
    if "client_fn" not in captured:
        raise RuntimeError("build did not construct a ClientApp(client_fn=..., mods=...)")
    return real(client_fn=captured["client_fn"], mods=[*before, *captured["mods"], *after])


def recording_server_app(inner: ServerApp, sink: list[OutboundItem]) -> ServerApp:
    """Return a ServerApp running ``inner`` that records every reply received through the grid."""
    from flwr.server import ServerApp

    outer = ServerApp()

    @outer.main()
    def main(grid: Any, context: Any) -> None:
        original = grid.send_and_receive

        def recording(messages: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
            out = list(original(messages, *args, **kwargs))
            for m in out:
                sink.extend(message_items(m, "server", str(m.metadata.src_node_id)))
            return out

        grid.send_and_receive = recording
        inner(grid, context)

    return outer


# -- inspection --------------------------------------------------------------------------------

#: A run of this many consecutive array entries that are values of one column (with at least
#: three distinct values among them) counts as record-level data; for columns with few
#: distinct values (0/1 flags) the run must be :data:`LOW_CARDINALITY_RUN` long.
RUN = 12
LOW_CARDINALITY_RUN = 48


def _numeric(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub" and value.size:
        return value.ravel().astype(np.float64)
    return None


def _member_mask(arr: np.ndarray, uniques: np.ndarray) -> np.ndarray:
    """Return which entries of ``arr`` equal (to float32 precision) one of ``uniques`` (sorted)."""
    idx = (
        np.clip(np.searchsorted(uniques, arr), 1, len(uniques) - 1)
        if len(uniques) > 1
        else np.zeros(len(arr), dtype=np.int64)
    )
    lo, hi = uniques[np.maximum(idx - 1, 0)], uniques[idx]
    tol = 1e-6 * np.maximum(1.0, np.abs(arr))
    return (np.abs(arr - lo) <= tol) | (np.abs(arr - hi) <= tol)


def _longest_data_run(arr: np.ndarray, uniques: np.ndarray) -> int:
    """Return the length of the longest qualifying run of column values in ``arr`` (0 if none)."""
    mask = _member_mask(arr, uniques)
    if not mask.any():
        return 0
    need_len = RUN if len(uniques) > 16 else LOW_CARDINALITY_RUN
    need_distinct = min(3, len(uniques))
    best, start = 0, None
    for i, m in enumerate(np.append(mask, False)):
        if m and start is None:
            start = i
        elif not m and start is not None:
            run = arr[start:i]
            if len(run) >= need_len and len(np.unique(np.round(run, 6))) >= need_distinct:
                best = max(best, len(run))
            start = None
    return best


def _contains(arr: np.ndarray, pattern: np.ndarray) -> bool:
    """Return whether ``pattern`` occurs in ``arr`` as a contiguous run (float32 precision)."""
    m = len(pattern)
    if m > len(arr):
        return False
    tol = 1e-5 * np.maximum(1.0, np.abs(pattern))
    starts = np.nonzero(np.abs(arr[: len(arr) - m + 1] - pattern[0]) <= tol[0])[0]
    return any(np.all(np.abs(arr[s : s + m] - pattern) <= tol) for s in starts)


def _texts(value: Any) -> list[str | bytes]:
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "USO":
        return [str(v) for v in value.ravel()]
    return []


def _is_small_count(value: Any) -> bool:
    from federation.complete_case import SMALL_COUNT

    try:
        return 0 < int(value) < SMALL_COUNT
    except (TypeError, ValueError):
        return True  # not a count at all


def inspect_outbound(
    items: Iterable[OutboundItem],
    secrets: Sequence[NodeSecrets],
    *,
    expect_secure_aggregation: bool = True,
    allowed_clear: frozenset[str] = ALLOWED_CLEAR,
    modulus: int = 2**32,
) -> list[Finding]:
    """Return everything in ``items`` that leaks a node's secrets or is not allowed in the clear.

    Kinds: ``pseudonym``, ``record_values``, ``clear_update``, ``unmasked_array`` (an array
    outside SecAgg+'s masked vectors when secure aggregation is expected), ``not_masked`` (a
    "masked" vector whose entries all lie in the lower half of the modulus), and
    ``unlisted_clear_value`` (a config/metric key not in ``allowed_clear`` nor under
    :data:`ALLOWED_CLEAR_PREFIXES`), ``small_count`` (a complete-case count from 1 to 9,
    which must leave the node as -1).
    """
    items = list(items)
    findings: list[Finding] = []
    raw_pseudonyms: dict[bytes, str] = {}
    hex_owner: dict[str, str] = {}
    for s in secrets:
        for p in s.pseudonyms:
            hex_owner[p.lower()] = s.name
            raw_pseudonyms[bytes.fromhex(p)] = s.name
    col_uniques = [
        (
            s.name,
            col,
            np.unique(
                np.asarray(v, dtype=np.float64)[np.isfinite(np.asarray(v, dtype=np.float64))]
            ),
        )
        for s in secrets
        for col, v in s.columns.items()
    ]
    updates = [
        (s.name, np.asarray(u, dtype=np.float64).ravel())
        for s in secrets
        for u in s.updates
        if np.asarray(u).size >= 2
    ]

    def add(kind: str, node: str, it: OutboundItem, detail: str) -> None:
        findings.append(Finding(kind, node, it.source, it.sender, it.path, detail))

    for it in items:
        key = it.key
        if key.startswith(("config_records/", "metric_records/")) and not allowed_clear_key(
            key, allowed_clear
        ):
            add(
                "unlisted_clear_value",
                "?",
                it,
                f"{key} is not on the list of what a node sends in the clear",
            )
        elif key.startswith(SMALL_COUNT_PREFIX) and _is_small_count(it.value):
            add("small_count", "?", it, f"{key} = {it.value}: a count under 10 sent as is")
        if key == "error/reason" or key.startswith("json"):
            pass  # checked below like any text or array
        for text in _texts(it.value):
            if isinstance(text, str):
                for hit in _HEX32.findall(text):
                    if hit.lower() in hex_owner:
                        add(
                            "pseudonym", hex_owner[hit.lower()], it, f"pseudonym {hit[:8]}… in text"
                        )
            else:
                for hit in _HEX32_B.findall(text):
                    h = hit.decode().lower()
                    if h in hex_owner:
                        add("pseudonym", hex_owner[h], it, f"pseudonym {h[:8]}… in bytes")
                for raw, owner in raw_pseudonyms.items():
                    if raw in text:
                        add("pseudonym", owner, it, f"raw pseudonym {raw.hex()[:8]}… in bytes")
        arr = _numeric(it.value)
        if arr is None:
            continue
        masked = key in MASKED_PATHS
        if masked:
            if arr.size >= 16 and float(arr.max()) < modulus / 2:
                add(
                    "not_masked",
                    "?",
                    it,
                    f"{arr.size} entries all below modulus/2: not uniformly masked",
                )
        elif expect_secure_aggregation and key.startswith("array_records/"):
            add(
                "unmasked_array",
                "?",
                it,
                f"{arr.size}-entry array outside SecAgg+'s masked vectors",
            )
        for owner, col, uniques in col_uniques:
            if uniques.size and arr.size >= RUN:
                run = _longest_data_run(arr, uniques)
                if run:
                    add("record_values", owner, it, f"a run of {run} values of column {col!r}")
        for owner, upd in updates:
            if _contains(arr, upd):
                add(
                    "clear_update",
                    owner,
                    it,
                    f"the node's plain {upd.size}-entry array in the clear",
                )
    return findings
