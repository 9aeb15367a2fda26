"""The request table: every id a client can send is either served or answered with an
error, and the README names each unserved request with its error code."""

from __future__ import annotations

from pathlib import Path

from harness_lib.sim.requests import LAYOUTS, REQUEST_IDS, SILENT_OK, UNSERVED

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_official_request_id_has_an_answer() -> None:
    from ibapi.message import OUT

    official = {v for k, v in vars(OUT).items() if k.isupper()}
    assert official <= set(REQUEST_IDS), sorted(official - set(REQUEST_IDS))
    assert not set(LAYOUTS) & set(UNSERVED)
    assert set(LAYOUTS) >= SILENT_OK


def test_readme_lists_each_unserved_request_with_its_code() -> None:
    text = README.read_text()
    section = text[text.index("**Not served**") :]
    section = section[: section.index("\n\n", section.index("| Request | Error |"))]
    rows = {line for line in section.splitlines() if line.startswith("| `")}
    for spec in UNSERVED.values():
        assert any(f"`{spec.name}`" in row and f"| {spec.code} " in row for row in rows), spec.name
