"""The simulator's control channel in-process: real HTTP on 127.0.0.1, a real ib_async client.

A fault added over the channel reaches a connected client on the wire (2103/2105, 1100),
its clearing is announced as IB would (2104/2106, 1101), and ground truth records both with
time stamps.
"""

from __future__ import annotations

import pytest

from harness_lib.drill.run import ControlClient
from harness_lib.sim import PaperGateway
from harness_lib.sim.control import ControlServer, is_loopback
from tests.helpers import connect, wait_until


def test_loopback_rule() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(ValueError, match="only with a token"):
        ControlServer(PaperGateway(), host="0.0.0.0")


@pytest.mark.ib_errors(1100, 1101)
async def test_faults_over_the_channel_reach_the_client_and_the_truth() -> None:
    async with PaperGateway() as gw:
        ctl = await ControlServer(gw).start()
        client = ControlClient(ctl.url)
        ib = await connect(gw.port)
        codes: list[int] = []
        ib.errorEvent += lambda _r, code, _m, _c: codes.append(code)
        try:
            ident = await client.identify()
            assert ident["simulator"] == "livefire-sim" and ident["ib_port"] == gw.port
            await client.call("POST", "/faults", {"name": "farm_down"})
            await wait_until(lambda: {2103, 2105} <= set(codes), 3)
            assert (await client.call("GET", "/faults"))["active"][0]["name"] == "farm_down"
            mark = len(codes)
            await client.call("DELETE", "/faults/farm_down")
            await wait_until(lambda: {2104, 2106} <= set(codes[mark:]), 3)
            params = {"disconnect_after": 0.0, "outage_seconds": 3600, "data_lost": True}
            await client.call("POST", "/faults", {"name": "connectivity_lost", "params": params})
            await wait_until(lambda: 1100 in codes, 3)
            await client.call("DELETE", "/faults")
            await wait_until(lambda: 1101 in codes, 3)
            truth = await client.truth()
            events = [(e["event"], e["name"]) for e in truth["faults"]]
            assert events == [
                ("added", "farm_down"),
                ("cleared", "farm_down"),
                ("added", "connectivity_lost"),
                ("fired", "connectivity_lost"),
                ("restored", "connectivity_lost"),
                ("cleared", "connectivity_lost"),
            ]
            stamps = [e["t_wall"] for e in truth["faults"]]
            assert stamps == sorted(stamps)
            with pytest.raises(RuntimeError, match="unknown scenario"):
                await client.call("POST", "/faults", {"name": "explode"})
            with pytest.raises(RuntimeError, match="HTTP 404"):
                await client.call("GET", "/nothing")
        finally:
            ib.disconnect()
            await client.close()
            await ctl.stop()


async def test_token_and_identity() -> None:
    async with PaperGateway() as gw:
        ctl = await ControlServer(gw, token="t0ken-abcdef").start()
        try:
            no = ControlClient(ctl.url)
            with pytest.raises(Exception, match="wants a token"):
                await no.identify()
            await no.close()
            yes = ControlClient(ctl.url, "t0ken-abcdef")
            assert (await yes.identify())["simulator"] == "livefire-sim"
            await yes.close()
        finally:
            await ctl.stop()


@pytest.mark.allow_peer_close
async def test_drop_is_recorded() -> None:
    async with PaperGateway() as gw:
        ctl = await ControlServer(gw).start()
        client = ControlClient(ctl.url)
        ib = await connect(gw.port)
        try:
            assert (await client.call("POST", "/disconnect"))["dropped"] == 1
            await wait_until(lambda: not ib.isConnected(), 3)
            truth = await client.truth()
            assert truth["faults"][-1]["event"] == "dropped"
            assert "dropped" in [c["event"] for c in truth["connections"]]
        finally:
            ib.disconnect()
            await client.close()
            await ctl.stop()
