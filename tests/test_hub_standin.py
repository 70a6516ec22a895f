"""The stand-in Hugging Face Hub (tests/support/hub.py) itself."""

from __future__ import annotations

from tests.support.hub import StandInHub


def test_the_stand_in_listens_on_loopback_only() -> None:
    with StandInHub({}) as hub:
        assert hub.server.server_address[0] == "127.0.0.1"
        assert hub.url.startswith("http://127.0.0.1:")
