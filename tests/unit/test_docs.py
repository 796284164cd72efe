"""Every setting is documented in the README, with its environment variable."""

from __future__ import annotations

from pathlib import Path

from urbanos.cli import build_parser
from urbanos.settings import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in README]
    assert missing == []


def test_every_setting_is_a_serve_flag() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {o for a in serve._actions for o in a.option_strings}
    assert {"--" + s.name.replace("_", "-") for s in SETTINGS} <= flags


def test_readme_starts_with_the_two_commands() -> None:
    head = README[: README.index("## ")]
    assert "make run" in head and "make test" in head
