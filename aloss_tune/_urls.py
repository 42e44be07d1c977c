"""URL helpers: never log a password.

A URL's password is found by parsing its authority the way SQLAlchemy reads a database URL
(``scheme://user:password@host...``: the user ends at the first ``:``, the password at the next ``@``), so
that a password holding ``/``, ``?`` or ``#`` (which a database URL may hold unencoded) is redacted whole.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# Userinfo inside free text (an error message quoting some URL): the password runs to the next "@".
_USERINFO_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&\s'\"]*")


def password_span(url: str) -> tuple[int, int] | None:
    """Where the password of ``scheme://user:password@host...`` lies in ``url`` (``None``: it has none).

    The user is the text after ``://`` up to the first ``:`` (no ``/`` in it); the password runs from there
    to the next ``@``, whatever it holds.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    start = scheme.end()
    colon = url.find(":", start)
    if colon < 0 or "/" in url[start:colon] or "@" in url[start:colon]:
        return None
    at = url.find("@", colon + 1)
    if at < 0:
        return None
    return colon + 1, at


def url_password(url: str | None) -> str | None:
    """The password of ``url`` as written (percent-encoding kept), or ``None``."""
    if not url:
        return None
    span = password_span(url)
    return None if span is None else url[span[0]:span[1]]


def redact_url(url: str | None) -> str | None:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; other URLs unchanged.

    Passwords in the query string (``?password=...``) are redacted too.
    """
    if url is None:
        return None
    text = str(url)
    span = password_span(text)
    if span is not None:
        text = text[:span[0]] + "***" + text[span[1]:]
    if "?" in text and "password" in text.lower():
        try:
            parts = urlsplit(text)
        except ValueError:
            parts = None
        if parts is not None and parts.query and "password" in parts.query.lower():
            text = urlunsplit(parts._replace(query=_QUERY_PASSWORD.sub(r"\1***", parts.query)))
        else:
            text = _QUERY_PASSWORD.sub(r"\1***", text)
    return text


def redact_text(text: str, *urls: str | None) -> str:
    """``text`` with every password of ``urls`` (as written, decoded or encoded) and of any URL it quotes
    replaced by ``***``."""
    out = text
    for url in urls:
        password = url_password(url)
        if password:
            for form in {password, unquote(password), quote(unquote(password), safe="")}:
                out = out.replace(form, "***")
    out = _USERINFO_IN_TEXT.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", out)
    return _QUERY_PASSWORD.sub(r"\1***", out)
