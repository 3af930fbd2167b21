"""The console's only way into Boxoffice: the staff API, with a staff key.

A box-office terminal never holds database credentials; everything it shows and does goes
through these calls, where the server checks the key's role.
"""

from __future__ import annotations

from typing import Any

import httpx


class Unreachable(Exception):
    """The API did not answer (down, restarting, network gone)."""


class ApiProblem(Exception):
    """The API answered with a problem (4xx/5xx). ``code`` is the last part of its type."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.code = str(body.get("type", "")).rsplit("/", 1)[-1] or "error"
        self.title = str(body.get("title") or f"HTTP {status}")
        self.detail = str(body.get("detail") or self.title)
        super().__init__(self.detail)


class StaffClient:
    """Calls the staff API. Every call either returns the decoded answer or raises
    ``Unreachable`` or ``ApiProblem``; nothing else escapes, so a screen has two cases to show."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}", "User-Agent": "boxoffice-console"},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise Unreachable(f"{self.base_url} is not answering ({type(error).__name__})") from error
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"title": f"HTTP {response.status_code}", "detail": response.text[:200]}
            raise ApiProblem(response.status_code, body if isinstance(body, dict) else {})
        return response

    async def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return (await self._send("GET", path, params=query)).json()

    async def get_bytes(self, path: str) -> bytes:
        return (await self._send("GET", path)).content

    async def post(
        self, path: str, body: dict[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = await self._send("POST", path, json=body if body is not None else {}, headers=headers)
        return response.json() if response.content else None

    async def put(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._send("PUT", path, json=body)
        return response.json() if response.content else None

    async def delete(self, path: str) -> None:
        await self._send("DELETE", path)

    async def patch(self, path: str, body: dict[str, Any]) -> Any:
        return (await self._send("PATCH", path, json=body)).json()
