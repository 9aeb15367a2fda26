"""The control channel of a running simulator: trigger and clear faults over HTTP/JSON.

``harness sim --control PORT`` serves it next to the gateway, on the gateway's own event loop,
so a fault takes effect between two messages exactly as ``PaperGateway.add_fault`` does
in-process. It is a deliberately tiny HTTP/1.1 server on the stdlib's ``asyncio`` streams
(one request per connection, JSON in and out): the library then needs no web framework, and
starlette/uvicorn stay in the ``examples`` group.

Binding: loopback by default. Any other interface needs a token (refused otherwise); with a
token every request must carry ``Authorization: Bearer TOKEN``.

    GET    /identity        {"simulator": "livefire-sim", "ib_port": ..., "accounts": [...]}
    GET    /faults          {"active": [{"name", "params", "since"}], "scenarios": [...]}
    POST   /faults          {"name": "farm_down", "params": {...}}  (add; "symbol" -> con_id)
    DELETE /faults/NAME     clear one (1101/1102 and 2104/2106 announced as IB would)
    DELETE /faults          clear all
    POST   /disconnect      drop every client connection now
    GET    /truth           fault events, connections, request counts, positions, counters
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import time
from dataclasses import asdict
from typing import Any

from .scenarios import Scenario, parse_scenario
from .server import SIM_MARKER, PaperGateway

log = logging.getLogger("harness_lib.sim.control")

MAX_BODY = 64 * 1024
READ_TIMEOUT = 5.0

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large"}  # fmt: skip

__all__ = ["ControlServer", "is_loopback", "truth_snapshot"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost' (the only binds allowed without a token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ControlError(Exception):
    """A request the channel refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def truth_snapshot(gw: PaperGateway) -> dict[str, Any]:
    """What the simulator did, as JSON: fault events, connections, requests, positions."""
    t = gw.truth
    return {
        "now_wall": time.time(),
        "summary": t.summary(),
        "faults": [e.to_dict() for e in t.faults],
        "connections": [
            {"t_mono": tm, "client_id": cid, "event": ev} for tm, cid, ev in t.connections
        ],
        "requests": [
            {"client_id": cid, "msg_id": mid, "count": n} for (cid, mid), n in t.requests.items()
        ],
        "positions": [
            {"account": acct, "symbol": inst.symbol, "con_id": inst.con_id, "qty": pos.qty}
            for acct, inst, pos in gw.broker.position_rows()
        ],
    }


def _active(gw: PaperGateway) -> list[dict[str, Any]]:
    return [
        {"name": scen.value, "params": asdict(f.params), "fired": f.fired}
        for scen, f in gw.faults.active.items()
    ]


class ControlServer:
    """The HTTP/JSON control channel of one ``PaperGateway``, on the gateway's loop."""

    def __init__(
        self, gw: PaperGateway, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None
    ) -> None:
        if not is_loopback(host) and not token:
            raise ValueError(
                f"the control channel may bind {host} only with a token; "
                "pass --control-token (or keep the default loopback bind)"
            )
        self.gw = gw
        self.host = host
        self._requested_port = port
        self.token = token or None
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The TCP port it listens on (known after start)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The base URL clients use."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> ControlServer:
        """Start listening."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self._requested_port, reuse_address=True
        )
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    # --- HTTP --------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, body = 500, {"error": "internal error"}
        try:
            method, path, headers, raw = await asyncio.wait_for(self._read(reader), READ_TIMEOUT)
            self._authorize(headers)
            status, body = 200, self._route(method, path, raw)
        except ControlError as exc:
            status, body = exc.status, {"error": str(exc)}
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except Exception as exc:  # a bug here must not take the simulator down
            log.exception("control request failed")
            status, body = 500, {"error": f"internal error: {exc}"}
        data = json.dumps(body).encode()
        reason = _REASONS.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + data)
            await writer.drain()
        writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
        line = (await reader.readline()).decode("latin-1").strip()
        parts = line.split()
        if len(parts) != 3:
            raise ControlError(400, "malformed request line")
        method, path = parts[0].upper(), parts[1].split("?", 1)[0]
        headers: dict[str, str] = {}
        while True:
            h = (await reader.readline()).decode("latin-1")
            if h in ("\r\n", "\n", ""):
                break
            k, _, v = h.partition(":")
            headers[k.strip().lower()] = v.strip()
        try:
            n = int(headers.get("content-length", "0"))
        except ValueError:
            raise ControlError(400, "bad Content-Length") from None
        if n > MAX_BODY:
            raise ControlError(413, f"body over {MAX_BODY} bytes")
        raw = await reader.readexactly(n) if n else b""
        return method, path, headers, raw

    def _authorize(self, headers: dict[str, str]) -> None:
        if self.token is None:
            return
        given = headers.get("authorization", "")
        want = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), want.encode()):
            raise ControlError(401, "missing or wrong token (Authorization: Bearer TOKEN)")

    def _route(self, method: str, path: str, raw: bytes) -> dict[str, Any]:
        gw = self.gw
        parts = [p for p in path.split("/") if p]
        if parts == ["identity"] and method == "GET":
            return {
                "simulator": SIM_MARKER,
                "ib_host": gw.host,
                "ib_port": gw.port,
                "accounts": gw.accounts,
            }
        if parts == ["faults"] and method == "GET":
            return {"active": _active(gw), "scenarios": [s.value for s in Scenario]}
        if parts == ["faults"] and method == "POST":
            return self._add(raw)
        if parts[:1] == ["faults"] and method == "DELETE" and len(parts) <= 2:
            name = parts[1] if len(parts) == 2 else None
            try:
                gw.clear_fault(name)
            except ValueError as exc:
                raise ControlError(400, str(exc)) from None
            return {"active": _active(gw)}
        if parts == ["disconnect"] and method == "POST":
            return {"dropped": gw.drop_all("control")}
        if parts == ["truth"] and method == "GET":
            return truth_snapshot(gw)
        known = {"identity", "faults", "disconnect", "truth"}
        if parts and parts[0] in known:
            raise ControlError(405, f"{method} not allowed on {path}")
        raise ControlError(404, f"no such resource {path}; see /identity, /faults, /truth")

    def _add(self, raw: bytes) -> dict[str, Any]:
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            raise ControlError(400, "body is not JSON") from None
        if not isinstance(req, dict) or not isinstance(req.get("name"), str):
            raise ControlError(400, 'body must be {"name": SCENARIO, "params": {...}}')
        params = req.get("params") or {}
        if not isinstance(params, dict):
            raise ControlError(400, "params must be an object")
        params = dict(params)
        symbol = params.pop("symbol", None)
        try:
            scen = parse_scenario(req["name"])
            if symbol is not None:
                inst = next(
                    (
                        i
                        for i in self.gw.catalogue.instruments
                        if symbol in (i.symbol, i.local_symbol)
                    ),
                    None,
                )
                if inst is None:
                    raise ValueError(f"unknown symbol {symbol!r}")
                params["con_id"] = inst.con_id
            self.gw.add_fault(scen, **params)
        except (ValueError, TypeError) as exc:
            raise ControlError(400, str(exc)) from None
        return {"active": _active(self.gw)}
