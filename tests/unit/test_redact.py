"""The one redaction module: every channel URL form the project documents or tests,
heartbeat URLs, apprise's own privacy knowledge, and the properties that keep secrets
out of what people see."""

from __future__ import annotations

import logging

import apprise
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness_lib.redact import (
    MASK,
    apprise_secrets,
    redact_text,
    redact_url,
    redacting_logs,
    secrets_in_url,
)

REDACTED = MASK
TG = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"

# (channel URL, the secrets in it, a part that must stay readable)
CHANNELS = [
    (f"tgram://{TG}/-100123456", [TG, "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"], "tgram://"),
    ("ntfy://my-topic", [], "ntfy://my-topic"),
    ("ntfys://ops:hunter2hunter2@ntfy.example.com/alerts", ["hunter2hunter2"], "ntfy.example.com"),
    ("ntfy://127.0.0.1:8080/alerts?token=tk_abcdef99", ["tk_abcdef99"], "127.0.0.1:8080/alerts"),
    (
        "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general",
        ["TIiajkdnlazkcOXrIdevi7FQ"],
        "slack://",
    ),
    (
        "discord://1234567890123/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        ["AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"],
        "discord://",
    ),
    ("mailto://alice:s3cretpw99@gmail.com?to=ops@example.com", ["s3cretpw99"], "gmail.com"),
    (
        "mailtos://alice:hunter2hunter2@smtp.example.com?to=ops@example.com&apikey=k-9",
        ["hunter2hunter2", "k-9"],
        "smtp.example.com",
    ),
    ("json://127.0.0.1:8000/hook", [], "json://127.0.0.1:8000/hook"),
    (
        "jsons://user:S3cr3tP4ss@hooks.example.com/path?+Authorization=Bearer%20xyzxyz",
        ["S3cr3tP4ss", "Bearer%20xyzxyz"],
        "hooks.example.com/path",
    ),
    (
        "msteams://team/a1b2c3d4-e5f6-a7b8-c9d0-e1f2a3b4c5d6/"
        "0123456789abcdef0123456789abcdef/a1b2c3d4-e5f6-a7b8-c9d0-e1f2a3b4c5d6/",
        ["0123456789abcdef0123456789abcdef", "a1b2c3d4-e5f6-a7b8-c9d0-e1f2a3b4c5d6"],
        "msteams://team/",
    ),
    (
        "pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi/",
        ["uQiRzpo4DXghDmr9QzzfQu27cmVRsG", "azGDORePK8gMaC0QOYAMyEEuzJnyUi"],
        "pover://",
    ),
    # Heartbeats (healthchecks.io and a self-hosted one).
    (
        "https://hc-ping.com/eb095278-f28d-448d-87fb-7b75c171a6aa",
        ["eb095278-f28d-448d-87fb-7b75c171a6aa"],
        "https://hc-ping.com/",
    ),
    (
        "http://127.0.0.1:8000/ping/Zx9kQ2mW7vB4nR8tY3pL?rid=1",
        ["Zx9kQ2mW7vB4nR8tY3pL"],
        "http://127.0.0.1:8000/ping/",
    ),
]


@pytest.mark.parametrize(("url", "secrets", "readable"), CHANNELS)
def test_every_channel_form_is_shown_without_its_secrets(
    url: str, secrets: list[str], readable: str
) -> None:
    shown = redact_url(url)
    assert readable in shown
    for secret in secrets:
        assert secret not in shown
    assert redact_url(shown) == shown
    # What log lines are scrubbed of covers what the display hides, except values too
    # short to replace in free text without shredding it (under four characters).
    scrubbed = redact_text(f"POST {url} failed", secrets_in_url(url))
    for secret in secrets:
        assert len(secret) < 4 or secret not in scrubbed


@pytest.mark.parametrize(("url", "secrets", "readable"), CHANNELS)
def test_apprise_privacy_rendering_names_its_private_parts(
    url: str, secrets: list[str], readable: str
) -> None:
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        # Heartbeats are plain HTTP; apprise 1.9 dropped msteams:// (Microsoft retired
        # incoming webhooks), so only our own rules protect those two forms.
        assert url.startswith(("http", "msteams")), f"apprise should accept {url}"
        assert apprise_secrets(object()) == set()
        return
    found = apprise_secrets(plugin)
    rendered = str(plugin.url(privacy=False))
    private = str(plugin.url(privacy=True))
    hidden_by_apprise = [x for x in secrets if x in rendered and x not in private]
    for secret in hidden_by_apprise:
        assert any(secret in f for f in found)
        assert secret not in redact_text(rendered, found)
    # The channel name a Delivery shows: our rendering, then apprise's private parts.
    channel = redact_text(redact_url(url), found)
    for secret in secrets:
        assert secret not in channel


def test_apprise_headers_are_caught_by_our_key_rule() -> None:
    # apprise shows +Header values in its privacy URL; the key rule (auth) hides them.
    url = "jsons://example.com/p?+Authorization=Bearer%20abcdefgh&+X-Trace=7"
    plugin = apprise.Apprise.instantiate(url)
    assert "Bearer%20abcdefgh" in str(plugin.url(privacy=True))
    shown = redact_url(url)
    assert "abcdefgh" not in shown and "X-Trace=7" in shown
    assert "Bearer%20abcdefgh" in secrets_in_url(url)


def test_redacting_logs_scrubs_every_logger_then_restores() -> None:
    before = logging.getLogRecordFactory()
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("test_redact.any")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with redacting_logs(secrets_in_url(f"tgram://{TG}/1")):
            logger.debug("GET /bot%s/sendMessage", TG)
        logger.debug("after %s", "TG")
    finally:
        logger.removeHandler(handler)
    assert seen[0] == f"GET /bot{MASK}/sendMessage"
    assert logging.getLogRecordFactory() is before


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ntfy://ntfy.sh/my-topic", "ntfy://ntfy.sh/my-topic"),
        ("ntfys://user:hunter2@ntfy.example.com/t", "ntfys://user:***@ntfy.example.com/t"),
        (
            "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/12345678",
            "tgram://***/12345678",
        ),
        (
            "https://api.telegram.org/bot123:ABCdef/sendMessage?chat_id=42",
            "https://api.telegram.org/***/sendMessage?chat_id=42",
        ),
        (
            "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "https://hooks.slack.com/services/T0000/B0000/***",
        ),
        (
            "https://hc-ping.com/eb095278-f28d-448d-87fb-7b75c171a6aa",
            "https://hc-ping.com/***",
        ),
        ("json://localhost:8080/x?token=abc&x=1", "json://localhost:8080/x?token=***&x=1"),
        (
            "https://h.io/p?apikey=a&Api-Key=b&webhook=c&pw=ok",
            "https://h.io/p?apikey=***&Api-Key=***&webhook=***&pw=ok",
        ),
        ("mailto://a:b@gmail.com?to=x@y.com", "mailto://a:***@gmail.com?to=x@y.com"),
        ("not a url token=abc", "not a url token=***"),
        ("", ""),
    ],
)
def test_redact_url_examples(url: str, expected: str) -> None:
    assert redact_url(url) == expected


_SCHEMES = st.sampled_from(["ntfy", "ntfys", "https", "tgram", "discord", "json", "mailtos"])
_HOSTS = st.from_regex(r"[a-z]{1,10}\.[a-z]{2,3}", fullmatch=True)
_WORDS = st.from_regex(r"[a-z]{1,8}", fullmatch=True)
_TOKENS = st.from_regex(r"[A-Za-z0-9_:-]{16,48}", fullmatch=True)
# Anything a URL can carry in that position (the delimiters must be percent-encoded).
_PASSWORDS = st.text(
    alphabet=st.characters(blacklist_characters="/?#", blacklist_categories=("Cs",)), min_size=1
)
_QUERY_VALUES = st.text(
    alphabet=st.characters(blacklist_characters="&#", blacklist_categories=("Cs",)), min_size=1
)
_SECRET_KEYS = st.sampled_from(
    ["token", "key", "secret", "password", "apikey", "webhook", "access_token", "Api-Key"]
)


@given(scheme=_SCHEMES, user=_WORDS, password=_PASSWORDS, host=_HOSTS, tail=_WORDS)
def test_password_never_survives(
    scheme: str, user: str, password: str, host: str, tail: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}/{tail}"
    assert redact_url(url) == f"{scheme}://{user}:{REDACTED}@{host}/{tail}"


@given(scheme=_SCHEMES, host=_HOSTS, before=_WORDS, token=_TOKENS, after=_WORDS)
def test_token_path_segment_never_survives(
    scheme: str, host: str, before: str, token: str, after: str
) -> None:
    url = f"{scheme}://{host}/{before}/{token}/{after}?x=1"
    assert redact_url(url) == f"{scheme}://{host}/{before}/{REDACTED}/{after}?x=1"


@given(scheme=_SCHEMES, host=_HOSTS, key=_SECRET_KEYS, value=_QUERY_VALUES)
def test_secret_query_values_never_survive(scheme: str, host: str, key: str, value: str) -> None:
    url = f"{scheme}://{host}/p?a=1&{key}={value}&b=2"
    assert redact_url(url) == f"{scheme}://{host}/p?a=1&{key}={REDACTED}&b=2"


@given(scheme=_SCHEMES, host=_HOSTS, token=_TOKENS, where=st.integers(0, 3))
def test_token_anywhere_never_survives(scheme: str, host: str, token: str, where: int) -> None:
    url = [
        f"{scheme}://{token}@{host}/x",
        f"{scheme}://{host}/x?id={token}",
        f"{scheme}://{host}/x#{token}",
        f"{scheme}://{token}/x",
    ][where]
    out = redact_url(url)
    assert token not in out
    assert out.startswith(f"{scheme}://")
    if where < 3:
        assert host in out  # the channel stays recognisable


@given(prefix=st.sampled_from(["", "ntfy://", "https://u:p@"]), text=st.text())
def test_redact_url_never_raises_and_is_idempotent(prefix: str, text: str) -> None:
    out = redact_url(prefix + text)
    assert isinstance(out, str)
    assert redact_url(out) == out
