"""HTTP transfer from MAST that trusts nothing the server says: the token's origin, redirects, size, rate.

- :class:`OriginToken` puts the ``mast_token`` cookie on requests to exactly one origin (scheme, host
  and port), never on a redirect that requests follows itself (requests drops the ``Cookie`` header
  there and does not apply the session's auth again).
- :func:`get_following_redirects` follows a transfer's redirects by hand: at most
  :data:`MAX_REDIRECTS`, and only to ``http``/``https``.
- :func:`stream_into` writes a response into a ``.part`` file without following a link, block by
  block as the bytes arrive, stops past a cap and drops a transfer below a minimum rate.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

#: Bytes read from the socket at most per block.
CHUNK = 65536
#: Redirects one transfer may follow before it counts as failed (a loop never ends otherwise).
MAX_REDIRECTS = 5


class TooLong(Exception):
    """A body ran past the size MAST reported, or the configured cap."""


class TooSlow(Exception):
    """A transfer fell below the minimum rate (a drip that keeps a connection alive)."""


class BadRedirect(Exception):
    """A redirect the downloader will not follow (a loop, or a scheme other than http/https)."""


def origin(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``url``, the port made explicit."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    scheme = u.scheme.lower()
    try:
        port = u.port
    except ValueError:          # a malformed port never matches
        port = -1
    return scheme, (u.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme, 0)


class OriginToken:
    """requests auth: the ``mast_token`` cookie on requests to one origin, never elsewhere.

    Parameters
    ----------
    token : str
        The MAST API token (never shown by ``repr``).
    server : str
        URL whose origin (scheme, host, port) alone receives it.
    """

    def __init__(self, token: str, server: str) -> None:
        self._token = token
        self.origin = origin(server)

    def __call__(self, request: Any) -> Any:
        """Add the token to ``request`` if it goes to the origin."""
        if origin(request.url) == self.origin:
            cookie = request.headers.get("Cookie")
            request.headers["Cookie"] = "; ".join(c for c in (cookie, f"mast_token={self._token}") if c)
        return request

    def __repr__(self) -> str:
        return f"OriginToken(origin={self.origin})"


def get_following_redirects(session: Any, url: str, headers: dict[str, str],
                            timeout: tuple[float, float]) -> Any:
    """GET ``url`` as a stream through ``session``, following redirects by hand.

    Each hop is a new request, so the session's auth decides afresh whether it carries the token.

    Raises
    ------
    BadRedirect
        Past :data:`MAX_REDIRECTS` hops, or for a redirect to a scheme other than http/https.
    """
    from urllib.parse import urljoin

    for _ in range(MAX_REDIRECTS + 1):
        resp = session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=False)
        if not resp.is_redirect:
            return resp
        resp.close()
        url = urljoin(url, resp.headers.get("Location", ""))
        scheme = origin(url)[0]
        if scheme not in ("http", "https"):
            msg = f"MAST redirected the transfer to a {scheme or 'schemeless'}: URL"
            raise BadRedirect(msg)
    msg = f"more than {MAX_REDIRECTS} redirects (a redirect loop?)"
    raise BadRedirect(msg)


def stream_into(resp: Any, part: Path, *, start: int, cap: int, cap_words: str, min_rate: float,
                rate_window: float) -> int:
    """Write the body of ``resp`` into ``part`` (appended from ``start``, else truncated).

    Blocks are written as they arrive (never waiting for a full block), so a broken transfer leaves
    its bytes for the next ``Range`` request. ``part`` is opened without following a link.

    Parameters
    ----------
    resp : requests.Response
        A streamed response.
    part : Path
        The ``.part`` file.
    start : int
        Bytes already in ``part`` that the body continues (0: start over).
    cap : int
        Bytes ``part`` may hold at most.
    cap_words : str
        What the cap is, for the error message.
    min_rate : float
        Bytes per second the transfer must keep up over each ``rate_window`` (0: no minimum).
    rate_window : float
        Seconds.

    Returns
    -------
    int
        Bytes in ``part``.

    Raises
    ------
    TooLong
        Past ``cap``.
    TooSlow
        Below ``min_rate``.
    """
    written = start
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_APPEND if start else os.O_TRUNC)
    window_t, window_bytes = time.monotonic(), written
    with os.fdopen(os.open(part, flags, 0o644), "wb") as fh:
        while block := resp.raw.read1(CHUNK, decode_content=True):
            written += len(block)
            if written > cap:
                msg = f"body longer than {cap_words}"
                raise TooLong(msg)
            fh.write(block)
            now = time.monotonic()
            if now - window_t >= rate_window:
                rate = (written - window_bytes) / (now - window_t)
                if rate < min_rate:
                    msg = (f"{rate:.0f} B/s over {now - window_t:.0f} s, under the minimum "
                           f"{min_rate:.0f} B/s ([download] min_rate_kbs)")
                    raise TooSlow(msg)
                window_t, window_bytes = now, written
    return written
