"""The landing page as a person sees it: a broker process, the page loaded in headless
chromium, and the DOM chromium rendered checked for the version, the store and the links."""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

from tests.integration.broker_process import Broker
from urbanos import __version__

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Rendered(HTMLParser):
    """The rendered DOM's links, the text of each element with an id, and the title."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.by_id: dict[str, str] = {}
        self.title = ""
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        self._open.append((tag, attributes.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for tag, ident in self._open:
            if ident:
                self.by_id[ident] = self.by_id.get(ident, "") + data
            if tag == "title":
                self.title += data


def test_chromium_renders_the_landing_page(tmp_path: Path, chromium: str) -> None:
    broker = Broker(store=f"sqlite:///{tmp_path}/landing.db", log=tmp_path / "broker.log")
    broker.start()
    try:
        run = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
             f"http://127.0.0.1:{broker.port}/"],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        broker.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    page = Rendered()
    page.feed(run.stdout)
    assert page.title == f"urbanos {__version__}", run.stdout
    assert page.by_id["version"] == __version__
    assert page.by_id["store"] == "sqlite"
    assert page.by_id["api"] == "/ngsi-ld/v1"
    assert page.links == ["/ngsi-ld/v1/types", "/docs", "/openapi.json", "/health", "/metrics"]
