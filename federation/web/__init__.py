"""What the web consoles share: sessions, sign-in, CSRF, labels, the login page and stylesheet."""

from federation.web.i18n import LANGS, SHARED_STRINGS, pick_lang, with_shared
from federation.web.sessions import Session, SessionStore, same_secret
from federation.web.shell import ConsoleCookies, ConsoleShell, console_csp

__all__ = [
    "ConsoleCookies",
    "ConsoleShell",
    "LANGS",
    "SHARED_STRINGS",
    "Session",
    "SessionStore",
    "console_csp",
    "pick_lang",
    "same_secret",
    "with_shared",
]
