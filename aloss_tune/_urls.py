"""URL helpers: never log a password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")


def redact_url(url: str | None) -> str | None:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; other URLs unchanged.

    Passwords in the query string (``?password=...``) are redacted too.
    """
    if url is None:
        return None
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", str(url))
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if parts.query and "password" in parts.query.lower():
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        text = urlunsplit(parts._replace(query=query))
    return text


def redact_text(text: str, *urls: str | None) -> str:
    """``text`` with every password of ``urls`` (and of any URL in it) replaced by ``***``."""
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
    out = re.sub(r"(?i)(password=)[^&\s'\"]*", r"\1***", out)
    for url in urls:
        if not url:
            continue
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            out = out.replace(password, "***")
    return out
