"""The consoles' languages, how a page picks one, and the labels every console shares."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LANGS", "SHARED_STRINGS", "pick_lang", "with_shared"]

LANGS = ("en", "ja")

#: Labels of the sign-in flow and page chrome, the same in every console.
SHARED_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "sign_in": "Sign in",
        "sign_out": "Sign out",
        "login_expired": "The sign-in form expired; please try again.",
        "language": "Language",
        "not_found": "Not found.",
    },
    "ja": {
        "sign_in": "サインイン",
        "sign_out": "サインアウト",
        "login_expired": "サインインフォームの有効期限が切れました。もう一度お試しください。",
        "language": "言語",
        "not_found": "見つかりません。",
    },
}


def with_shared(own: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Return a console's labels per language with the shared ones added.

    Raises:
        ValueError: ``own`` lacks a language, or redefines a shared label.
    """
    merged = {}
    for lang in LANGS:
        if lang not in own:
            raise ValueError(f"labels: no {lang!r} table")
        clash = sorted(set(own[lang]) & set(SHARED_STRINGS[lang]))
        if clash:
            raise ValueError(f"labels: {clash} are shared labels; drop them from the console's")
        merged[lang] = {**SHARED_STRINGS[lang], **own[lang]}
    return merged


def pick_lang(query: str | None, cookie: str | None) -> str:
    """Return the language asked for by the query, else the cookie, else English."""
    for value in (query, cookie):
        if value is not None and value in LANGS:
            return value
    return "en"
