"""The few HTTPS requests the WebRTC and Voice SDK transports make before they connect:
the only module that imports aiohttp's client.

The API key travels in the ``Authorization: Bearer`` header only (never in a URL, a log line
or an exception); aiohttp's errors become ``TransportError`` (``AuthenticationError`` for
401/403) naming the endpoint and the HTTP status.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

from appliance import __version__
from appliance.credentials import ApiKey
from appliance.errors import AuthenticationError, TransportError

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # an SDP answer or a token is a few KiB


def bearer(key: ApiKey) -> str:
    """``Authorization`` value of the HTTPS endpoints (the WebSocket uses ``Basic``)."""
    return f"Bearer {key.reveal()}"


async def request(
    method: str,
    url: str,
    key: ApiKey,
    *,
    what: str,
    timeout_s: float,
    body: str | None = None,
    content_type: str | None = None,
) -> tuple[str, str]:
    """One request; returns (content type, body text) of a 2xx answer.

    ``what`` names the endpoint in errors ("voice-sdk token", "webrtc call").
    """
    headers = {"Authorization": bearer(key), "User-Agent": f"appliance/{__version__}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(method, url, headers=headers, data=body, allow_redirects=False) as resp,
        ):
            text = (await resp.content.read(MAX_BODY)).decode("utf-8", "replace")
            if resp.status in (401, 403):
                raise AuthenticationError(
                    f"the {what} endpoint refused the API key from {key.source} (HTTP {resp.status})"
                )
            if not 200 <= resp.status < 300:
                raise TransportError(f"{what} request failed with HTTP {resp.status}")
            return resp.headers.get("Content-Type", ""), text
    except TransportError:
        raise
    except TimeoutError:
        raise TransportError(f"{what} request timed out") from None
    except aiohttp.InvalidURL:
        raise TransportError(f"{what} request: invalid URL (realtime.api_url)") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise TransportError(f"{what} request failed: {_describe(exc)}") from None


async def request_json(
    method: str, url: str, key: ApiKey, *, what: str, timeout_s: float
) -> dict[str, Any]:
    """A request whose 2xx answer must be a JSON object."""
    _, text = await request(method, url, key, what=what, timeout_s=timeout_s)
    try:
        data = json.loads(text)
    except ValueError:
        raise TransportError(f"{what} answer is not JSON") from None
    if not isinstance(data, dict):
        raise TransportError(f"{what} answer is not a JSON object")
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        text = str(exc.os_error.strerror or exc.os_error)
        if "Name or service not known" in text or "Temporary failure in name resolution" in text:
            return "DNS failure"
        return text
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return exc.__class__.__name__
