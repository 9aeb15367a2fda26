"""The [[stack]] declaration: validation names the key, headers never show, substitution."""

from __future__ import annotations

import json

import pytest

from harness_lib.stack.observe import Extractor, number
from harness_lib.stack.spec import StackSpecError, parse_stack, scrub, split_attr

TOKEN = "not-a-real-token-0123456789"


def decl(**over: object) -> dict:
    """The reference dashboard's SSE endpoint per the agreed spec."""
    d: dict = {
        "name": "dash-sse",
        "kind": "sse",
        "url": "http://127.0.0.1:8765/events",
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "quote": {
            "select": 'quotes."{symbol}"',
            "bid": "bid",
            "ask": "ask",
            "last": "last",
            "mode": "mode",
            "live": ["live"],
        },
        "position": {
            "scope": "positions",
            "select": "[?symbol == '{symbol}'] | [0]",
            "quantity": "qty",
        },
        "trades": {"ids": 'last_trade."{symbol}".[execId, permId]'},
    }
    d.update(over)
    return d


def test_valid_declaration_parses_with_defaults() -> None:
    (ep,) = parse_stack([decl()], "harness.toml")
    assert ep.kind == "sse" and ep.position_deadline == 5.0 and ep.hold == 3.0
    assert ep.quote is not None and ep.quote.placeholders[:2] == ("", "-")
    assert ep.tolerance is None


@pytest.mark.parametrize(
    ("change", "key", "fragment"),
    [
        ({"kind": "grpc"}, "stack[0].kind", "sse | websocket | http | browser"),
        ({"url": "ftp://x/y"}, "stack[0].url", "starts with http://"),
        ({"kind": "websocket"}, "stack[0].url", "ws://"),
        ({"subscribe": "{}"}, "stack[0].subscribe", "only a websocket"),
        ({"interval": 1}, "stack[0].interval", "only an http endpoint"),
        ({"hold": -1}, "stack[0].hold", "seconds > 0"),
        ({"tolerance": "abc"}, "stack[0].tolerance", "price difference"),
        ({"name": "a b"}, "stack[0].name", "letters, digits"),
        ({"quotes": {}}, "stack[0].quotes", "did you mean 'quote'"),
        ({"quote": None, "position": None, "trades": None}, "stack[0]", "declares no facts"),
    ],
)
def test_bad_declarations_name_the_key(change: dict, key: str, fragment: str) -> None:
    with pytest.raises(StackSpecError) as err:
        parse_stack([decl(**change)], "harness.toml")
    msg = str(err.value)
    assert msg.startswith(f"invalid {key} from harness.toml:"), msg
    assert fragment in msg and "\n" not in msg
    assert TOKEN not in msg


def test_bad_jmespath_names_the_nested_key() -> None:
    d = decl()
    d["quote"] = {**d["quote"], "bid": "bid["}
    expected = r"^invalid stack\[0\]\.quote\.bid from x\.toml: 'bid\['"
    with pytest.raises(StackSpecError, match=expected):
        parse_stack([d], "x.toml")


def test_second_endpoint_index_and_duplicate_names() -> None:
    with pytest.raises(StackSpecError, match=r"stack\[1\]\.name .*duplicate"):
        parse_stack([decl(), decl()], "HARNESS_STACK")


def test_env_json_and_bad_json() -> None:
    (ep,) = parse_stack(json.dumps([decl()]), "HARNESS_STACK")
    assert ep.name == "dash-sse"
    with pytest.raises(StackSpecError, match=r"^invalid stack from HARNESS_STACK: .*not JSON"):
        parse_stack("[{", "HARNESS_STACK")


def test_bad_header_value_is_not_shown() -> None:
    with pytest.raises(StackSpecError) as err:
        parse_stack([decl(headers={"Authorization": TOKEN + "\nX"})], "harness.toml")
    assert TOKEN not in str(err.value) and "stack[0].headers.Authorization" in str(err.value)


def test_headers_never_in_repr_public_or_scrubbed_text() -> None:
    (ep,) = parse_stack([decl(url=f"http://127.0.0.1:1/events?token={TOKEN}")], "t")
    assert TOKEN not in repr(ep)
    assert TOKEN not in json.dumps(ep.public())
    assert ep.public()["headers"] == {"Authorization": "***"}
    assert TOKEN not in ep.scrub(f"server said: bad token {TOKEN} (Bearer {TOKEN})")
    # A short token the generic rule would miss is still hidden, literally.
    assert "s3cr" not in scrub("got s3cr in reply", ["Bearer s3cr"])


def test_bind_substitutes_only_the_three_names() -> None:
    d = decl()
    d["quote"] = {**d["quote"], "select": "quotes.{symbol}", "bid": "{b: bid}.b"}
    (ep,) = parse_stack([d], "t")
    bound = ep.bind(symbol="AAPL", con_id=265598, local_symbol="AAPL")
    assert bound.quote is not None
    assert bound.quote.select == "quotes.AAPL"
    assert bound.quote.bid == "{b: bid}.b"  # a JMESPath multiselect hash is left alone
    assert bound.position is not None and "'AAPL'" in bound.position.select


def test_browser_selectors_and_attributes() -> None:
    d = decl(
        kind="browser",
        url="http://127.0.0.1:8765/",
        quote={
            "select": "#quote-{symbol}",
            "bid": ".bid",
            "ask": ".ask",
            "mode": ".mode@data-mode",
        },
        position={"select": '.position-card[data-symbol="{symbol}"]', "quantity": ".qty"},
        trades={"ids": '.last-trade[data-symbol="{symbol}"] .exec-id'},
    )
    (ep,) = parse_stack([d], "t")
    assert split_attr(".mode@data-mode") == (".mode", "data-mode")
    assert split_attr('a[href="x@y"]') == ('a[href="x@y"]', None)
    with pytest.raises(StackSpecError, match=r"stack\[0\]\.quote\.bid .*unbalanced"):
        parse_stack([{**d, "quote": {**d["quote"], "bid": ".bid["}}], "t")
    assert Extractor(ep.bind(symbol="AAPL", con_id=1, local_symbol="AAPL")).dom_spec()["quote"][
        "mode"
    ] == [".mode", "data-mode"]


@pytest.mark.parametrize(
    ("shown", "value"),
    [
        (189.5, 189.5),
        ("189.50", 189.5),
        ("1,234.5", 1234.5),
        (None, None),
        (float("nan"), None),
        ("NaN", None),
        ("nan", None),
        ("—", None),
        ("N/A", None),
        ("", None),
        (True, None),
        ("abc", None),
    ],
)
def test_number_rule(shown: object, value: float | None) -> None:
    assert number(shown, ("", "-", "--", "—", "N/A", "n/a")) == value


def test_extractor_facts_partial_messages_and_garbage() -> None:
    (ep,) = parse_stack([decl()], "t")
    ex = Extractor(ep.bind(symbol="AAPL", con_id=265598, local_symbol="AAPL"))
    full = ex.from_text(
        json.dumps(
            {
                "quotes": {"AAPL": {"bid": 189.5, "ask": 189.52, "last": 189.51, "mode": "live"}},
                "positions": [{"symbol": "AAPL", "qty": 1}],
                "last_trade": {"AAPL": {"execId": "e1", "permId": 123}},
            }
        ),
        1.0,
        2.0,
    )
    assert full.error is None and full.quote is not None
    assert (full.quote.bid, full.quote.ask, full.quote.mode) == (189.5, 189.52, "live")
    assert full.position is not None and full.position.quantity == 1.0
    assert full.trade_ids == ("e1", "123")
    flat = ex.from_text('{"positions": []}', 1.0, 2.0)
    assert flat.quote is None and flat.trade_ids is None
    assert flat.position is not None and flat.position.quantity == 0.0
    nulls = ex.from_text('{"quotes": {"AAPL": {"bid": null, "ask": NaN, "mode": "live"}}}', 1, 2)
    assert nulls.quote is not None and nulls.quote.bid is None and nulls.quote.ask is None
    assert "bid null" in nulls.quote.describe() and "ask NaN" in nulls.quote.describe()
    nothing = ex.from_text('{"status": {"connected": true}}', 1, 2)
    assert not nothing.says_anything and nothing.error is None
    assert ex.from_text("<html>", 1, 2).error is not None
    assert "wrong shape" in (ex.from_text("[1, 2]", 1, 2).error or "")
    assert "wrong shape" in (ex.from_text('{"quotes": {"AAPL": [1]}}', 1, 2).error or "")
