"""Secrets kept out of everything Shoal writes or prints: one home for the masking.

A Redis password (`redis://:PASSWORD@host`, `rediss://user:PASSWORD@host`, `?password=`) and
the dashboard token must not reach stdout, log lines, events, the saved `config.yaml`, the
run's record in Redis or the dashboard. Everything that shows a URL or a config goes through
`redact_url` / `redact_config`; the unmasked values stay in memory (the config object the
driver hands its actors).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

# a whole word of a key name (`api_token`, `password`, `?access_token=`), not a count such as
# `max_new_tokens` (masking that left the printed and saved config without its lengths)
SECRET_KEY = re.compile(r"(?<![a-z])(?:token|password|passwd|secret)(?![a-z])", re.I)
MASK = "***"


def redact_url(url: str) -> str:
    """`url` without its password, in the userinfo part or in the query string."""
    parts, out = urlsplit(url), url
    if parts.password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        out = out.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:{MASK}@{host}", 1)
    if parts.query and SECRET_KEY.search(parts.query):
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode([(k, MASK if SECRET_KEY.search(k) else v) for k, v in pairs], safe="*/")
        out = out.replace(f"?{parts.query}", f"?{query}", 1)
    return out


URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.I)


def redact_text(text: str) -> str:
    """Free text (a traceback, a log line) with the password of every URL in it masked."""
    return URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def redact_config(obj: Any, key: str = "") -> Any:
    """A copy with secrets hidden: values under token/password/secret keys, URL passwords."""
    if isinstance(obj, dict):
        return {k: redact_config(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_config(v, key) for v in obj]
    if obj is not None and SECRET_KEY.search(key):
        return MASK
    if isinstance(obj, str) and "://" in obj:
        return redact_url(obj)
    return obj
