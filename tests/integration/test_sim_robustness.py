"""Bad clients affect only their own connection; the simulator keeps serving others."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness_lib.sim import PaperGateway
from harness_lib.sim.wire import frame
from tests.helpers import connect


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _greet(port: int, client_id: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _raw(port)
    version = b"v157..178"
    writer.write(b"API\0" + struct.pack(">I", len(version)) + version)
    await writer.drain()
    n = struct.unpack(">I", await reader.readexactly(4))[0]
    fields = (await reader.readexactly(n)).split(b"\0")
    assert fields[0] == b"178"
    writer.write(frame([71, 2, client_id, ""]))
    await writer.drain()
    return reader, writer


async def _still_serves(gw: PaperGateway, client_id: int = 50) -> None:
    ib = await connect(gw.port, client_id)
    try:
        assert (await ib.reqCurrentTimeAsync()) is not None
    finally:
        ib.disconnect()


async def test_garbage_instead_of_the_api_prefix_closes_only_that_socket(
    paper_gateway: PaperGateway,
) -> None:
    reader, writer = await _raw(paper_gateway.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server
    await _still_serves(paper_gateway)


async def test_unknown_message_id_and_malformed_fields_keep_the_connection(
    paper_gateway: PaperGateway,
) -> None:
    reader, writer = await _greet(paper_gateway.port, 7)
    writer.write(frame([9999, 1, 2, 3]))  # unknown id
    writer.write(frame(["abc", 1]))  # non-numeric id
    writer.write(frame([59, 1, "not-a-number"]))  # malformed reqMarketDataType
    writer.write(frame([49, 1]))  # then a valid reqCurrentTime
    await writer.drain()
    seen: list[bytes] = []
    while b"49" not in seen:
        n = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 2))[0]
        payload = await reader.readexactly(n)
        seen.append(payload.split(b"\0")[0])
    assert b"4" in seen  # the malformed request got an error 320 reply
    writer.close()
    await _still_serves(paper_gateway)


async def test_client_that_disconnects_mid_message(paper_gateway: PaperGateway) -> None:
    reader, writer = await _greet(paper_gateway.port, 8)
    payload = frame([1, 11, 5, 265598])
    writer.write(payload[: len(payload) // 2])
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.1)
    await _still_serves(paper_gateway)
    del reader


async def test_oversized_frame_is_refused(paper_gateway: PaperGateway) -> None:
    reader, writer = await _greet(paper_gateway.port, 9)
    writer.write(struct.pack(">I", 1 << 30) + b"x" * 16)
    await writer.drain()
    data = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), 2)
        if not chunk:
            break
        data += chunk
    await _still_serves(paper_gateway)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.lists(st.binary(max_size=64), min_size=1, max_size=6))
def test_random_frames_never_take_the_server_down(junk: list[bytes], threaded_gateway) -> None:
    async def scenario() -> None:
        reader, writer = await _greet(threaded_gateway.port, 30)
        # The server may drop this garbage-sending socket at any point: that is allowed.
        with contextlib.suppress(ConnectionError):
            for blob in junk:
                writer.write(struct.pack(">I", len(blob)) + blob)
            await writer.drain()
        writer.close()
        ib = await connect(threaded_gateway.port, 31)
        try:
            assert (await ib.reqCurrentTimeAsync()) is not None
        finally:
            ib.disconnect()
        del reader

    asyncio.run(scenario())


def test_threaded_gateway_switches_scenario_from_another_thread(threaded_gateway) -> None:
    threaded_gateway.set_scenario("never_ticks")
    assert threaded_gateway.gw is not None
    assert threaded_gateway.gw.scenario == "never_ticks"
    with pytest.raises(ValueError):
        threaded_gateway.set_scenario("bogus")
