"""The README's walk-through, as written, against a broker process: an example that stops
working fails the tests.

The ```sh block under "A walk through the API" is taken from README.md and run by bash with
only the broker's address changed (a fresh SQLite file, a free port). ``curl`` is wrapped by
a shell function that marks where each answer ends and how curl exited, so each command's
answer is checked on its own, against the comment it stands under.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.broker_process import Broker

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "http://127.0.0.1:1026"
END = "--- end of answer ---"
SENSOR = "urn:ngsi-ld:WaterLevel:kuma-01"


def walkthrough() -> str:
    """The shell block of the README's "A walk through the API" section."""
    section = README.read_text(encoding="utf-8").split("## A walk through the API", 1)[1]
    found = re.search(r"^```sh\n(.*?)^```", section, re.S | re.M)
    assert found, "README.md: no ```sh block in the walk-through"
    return found.group(1)


def commands_by_comment(script: str) -> list[str]:
    """For each curl command of the script, the comment it stands under."""
    comment, out = "", []
    for line in script.splitlines():
        if line.startswith("# "):
            comment = line[2:]
        elif line.startswith("curl "):
            out.append(comment)
    return out


class Answer:
    """One curl command's output: with ``-i``, status line, headers and body."""

    def __init__(self, raw: str, exit_code: int) -> None:
        self.raw = raw
        assert exit_code == 0, f"curl exited with {exit_code} (an answer of {raw!r})"
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        if raw.startswith("HTTP/"):
            head, _, raw = raw.replace("\r\n", "\n").partition("\n\n")
            status_line, *lines = head.splitlines()
            self.status = int(status_line.split()[1])
            self.headers = {k.strip().lower(): v.strip()
                            for k, _, v in (h.partition(":") for h in lines)}
        self.body = raw.strip()

    def json(self) -> Any:
        assert self.body, f"no answer: {self.raw!r}"
        return json.loads(self.body)


def created(a: Answer) -> None:
    assert a.status == 201, a.raw
    assert a.headers["location"] == f"/ngsi-ld/v1/entities/{SENSOR}"


def found_the_sensor(level: float) -> Callable[[Answer], None]:
    def check(a: Answer) -> None:
        entities = a.json()
        assert [e["id"] for e in entities] == [SENSOR], entities
        assert entities[0]["level"]["value"] == level

    return check


def no_content(a: Answer) -> None:
    assert a.status == 204, a.raw
    assert a.body == ""


def key_values(a: Answer) -> None:
    assert a.json() == {
        "id": SENSOR, "type": "WaterLevel", "level": 3.5,
        "location": {"type": "Point", "coordinates": [130.76, 32.21]},
        "bridge": "urn:ngsi-ld:Bridge:nishise",
    }


# the comment over each curl command of the walk-through, and what its answer must be
EXPECTED: list[tuple[str, Callable[[Answer], None]]] = [
    ("create a river water-level sensor", created),
    ("geo-query: sensors within 2 km of a point (-g: the brackets are not a curl glob)",
     found_the_sensor(2.7)),
    ("the river rises: update the level", no_content),
    ("query: sensors above the flood caution level (3.0 m)", found_the_sensor(3.5)),
    ("read it back in the simplified form, then delete it", key_values),
    ("read it back in the simplified form, then delete it", no_content),
]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(store=f"sqlite:///{tmp_path}/readme.db", log=tmp_path / "broker.log")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_the_walkthrough_answers_as_the_readme_says(curl: str, broker: Broker) -> None:
    script = walkthrough()
    assert README_ADDRESS in script, "the walk-through no longer talks to the default address"
    assert commands_by_comment(script) == [comment for comment, _ in EXPECTED], (
        "the README's walk-through changed: say in EXPECTED what each command should answer"
    )
    wrapped = (
        f'curl() {{ local rc=0; command curl "$@" || rc=$?; printf "\\n{END} %s\\n" $rc; }}\n'
        + script.replace(README_ADDRESS, f"http://127.0.0.1:{broker.port}")
    )
    run = subprocess.run(["bash", "-c", wrapped], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    *answers, rest = re.split(rf"\n{END} (\d+)\n", run.stdout)
    assert rest == "" and len(answers) == 2 * len(EXPECTED), run.stdout
    for (comment, check), raw, code in zip(EXPECTED, answers[::2], answers[1::2], strict=True):
        try:
            check(Answer(raw, int(code)))
        except AssertionError as e:
            raise AssertionError(f"README step {comment!r}: {e}") from e
    # and the last step left nothing behind
    r = httpx.get(broker.url + f"entities/{SENSOR}")
    assert r.status_code == 404

