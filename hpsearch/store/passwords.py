"""Passwords in storage URLs and in the messages that quote them: hidden (***) wherever hpsearch prints.

`mask_url` is applied to every storage URL hpsearch shows and to every error message and
traceback it prints (cli/app.py), since a database driver's message may quote the URL or a
part of it.
"""

from __future__ import annotations

import re

# user:password@ in a URL: hidden up to the LAST '@' before the host (an unencoded '@' in a password is
# common), never past a '/', '?' or whitespace. SQLAlchemy splits at the first '@', so the rest of such
# a password reaches the driver as the start of the host, and its messages quote it: _SEEN_PASSWORDS.
_URL_PASSWORD = re.compile(r"(://[^:/?#@\s]*:)[^/?#\s]*@")
# password=... as a query parameter (?password=x, &password=x), quoted or not, and DSN-style key=value text.
_QUERY_PASSWORD = re.compile(
    r"((?:[?&]|\b)(?:password|passwd|pwd)=)(?!\*\*\*)(\"[^\"]*\"|'[^']*'|[^&\s]*)", re.IGNORECASE
)
_SEEN_PASSWORDS: set[str] = set()  # what mask_url has hidden so far: hidden in every later text too


def mask_url(url: str) -> str:
    """The URL (or any text holding URLs) with every password replaced by ***, for messages and logs.

    Covers every form SQLAlchemy accepts: `scheme://user:pw@host` (also with
    an unencoded '@' or ':' in pw), `?password=pw` / `&password=pw` query
    parameters, and libpq's `password=pw` key-value form in driver messages.
    Passwords it has seen are hidden from later texts as well: a driver's
    message names the host SQLAlchemy parsed, which for `u:se@cret@host`
    is `cret@host` (it splits at the first '@'), a part of the password.
    """
    for match in _URL_PASSWORD.finditer(url):
        password = match.group(0)[len(match.group(1)) : -1]
        tail = password.partition("@")[2]  # what SQLAlchemy takes for the start of the host
        _SEEN_PASSWORDS.update([password] if len(password) >= 4 else [])  # shorter ones: too common to hide
        _SEEN_PASSWORDS.update([tail + "@"] if tail else [])
    masked = _URL_PASSWORD.sub(r"\1***@", url)
    masked = _QUERY_PASSWORD.sub(r"\1***", masked)
    for seen in sorted(_SEEN_PASSWORDS, key=len, reverse=True):
        masked = masked.replace(seen, "***@" if seen.endswith("@") else "***")
    return masked
