"""Pure parts of the pytest plugin: HOST:PORT parsing and the target labels."""

from __future__ import annotations

import pytest

from harness_lib.pytest_plugin.options import parse_gateway, target_label


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4002", ("127.0.0.1", 4002)),
        (" gw.lan:7497 ", ("gw.lan", 7497)),
        ("[::1]:4002", ("::1", 4002)),
    ],
)
def test_host_port_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_gateway(text, "--livefire-gateway") == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("4002", "expected HOST:PORT"),
        ("host:", "expected HOST:PORT"),
        ("host:abc", "expected HOST:PORT"),
        ("127.0.0.1:0", "invalid port from HARNESS_PYTEST_GATEWAY: 0"),
        ("http://x:4002", "invalid host from HARNESS_PYTEST_GATEWAY: 'http://x'"),
    ],
)
def test_bad_host_port_is_one_line_naming_the_source(text: str, needle: str) -> None:
    with pytest.raises(pytest.UsageError) as info:
        parse_gateway(text, "HARNESS_PYTEST_GATEWAY")
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert "e.g. --livefire-gateway 127.0.0.1:4002" in message


def test_labels_say_which_world_and_mask_the_account() -> None:
    gateway = target_label(simulated=False, host="10.0.0.5", port=4002, account="DU7654321")
    assert gateway == "GATEWAY 10.0.0.5:4002 (account DU****321)"
    sim = target_label(
        simulated=True, host="127.0.0.1", port=7599, account="DU1234567", scenario="healthy"
    )
    assert sim == "SIMULATOR 127.0.0.1:7599 (scenario healthy, account DU****567)"
    assert target_label(simulated=True, host="h", port=1, account=None) == "SIMULATOR h:1"
