"""What a linked job reveals to each holder: the statement a node admin reads before approving.

Shown wherever a node admin decides (the coordinator's console, the node's own console and
``hamanasu node approvals list``) for every job with a ``[link]`` table, in English and
Japanese; ``SECURITY.md`` states the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["REVEALS", "link_key", "linkage_statement"]

#: The statement per language; ``{key}`` is the linkage column.
REVEALS = {
    "en": (
        "Linked job on key '{key}': private set intersection aligns this node's consenting "
        "residents with the other holders'. This node learns which of its own residents are "
        "in the linked cohort (each other holder learns the same of its own); set sizes are "
        "public to the holders (each holder's consenting residents and the cohort). No "
        "pseudonym or row value leaves this node in the clear: only blinded points travel, "
        "its columns are computed on as secret shares, and only the job's aggregate result "
        "is opened."
    ),
    "ja": (
        "キー「{key}」による連結ジョブ：私的集合共通部分（PSI）で、このノードの同意済みの住民を"
        "他の保有者の住民と照合します。このノードは自らの住民のうち連結コホートに含まれる者を知り"
        "（他の保有者もそれぞれ自らの住民について同じことを知ります）、集合の大きさ（各保有者の"
        "同意済み住民数とコホートの人数）は保有者の間で公開されます。仮名も行の値も平文では"
        "このノードから出ません。送られるのは盲化された点だけで、列は秘密分散のまま計算され、"
        "開示されるのはジョブの集計結果だけです。"
    ),
}


def link_key(spec: Any) -> str | None:
    """Return the linkage column of a linked job (a spec or its mapping), else None."""
    link = spec.get("link") if isinstance(spec, Mapping) else getattr(spec, "link", None)
    if link is None:
        return None
    key = link.get("key", "subject") if isinstance(link, Mapping) else link.key
    return str(key)


def linkage_statement(spec: Any, lang: str = "en") -> str | None:
    """Return what the linked job reveals to this node (None for a job without ``[link]``)."""
    key = link_key(spec)
    if key is None:
        return None
    return REVEALS.get(lang, REVEALS["en"]).format(key=key)
