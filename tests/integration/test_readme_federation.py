"""The README's two-organisation example, as written, against two broker processes: the
city's (the README's 1026) and the university's (1027), each on its own SQLite file.

The ```sh block under "Two organisations, one query" is run by bash with only the two
addresses changed; each curl answer is checked against the comment it stands under, as the
walk-through test does.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.broker_process import Broker
from tests.integration.test_readme import END, README, Answer, commands_by_comment

CITY_ADDRESS, UNIVERSITY_ADDRESS = "http://127.0.0.1:1026", "http://127.0.0.1:1027"
CITY_GAUGE = "urn:ngsi-ld:WaterLevelObserved:city-kuma-01"
UNIVERSITY_GAUGE = "urn:ngsi-ld:WaterLevelObserved:univ-kuma-02"
RISK_AREA = "urn:ngsi-ld:FloodRiskArea:hitoyoshi-1"


def federation_block() -> str:
    """The second ```sh block of the README's federation section (the first starts the
    university's broker, which the test does itself)."""
    section = README.read_text(encoding="utf-8").split(
        "## Two organisations, one query (federation)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 2, "README.md: the federation section should hold two ```sh blocks"
    assert "URBANOS_PORT=1027" in blocks[0], "the university's broker no longer runs on 1027"
    return str(blocks[1])


def status(code: int) -> Callable[[Answer], None]:
    def check(a: Answer) -> None:
        assert a.status == code, a.raw
    return check


def ids(*expected: str) -> Callable[[Answer], None]:
    def check(a: Answer) -> None:
        assert sorted(e["id"] for e in a.json()) == sorted(expected), a.body
        assert a.status is None  # no -i: the body alone
    return check


def gauges_above_caution(a: Answer) -> None:
    body = a.json()
    assert sorted(e["id"] for e in body) == [CITY_GAUGE, UNIVERSITY_GAUGE], body
    assert {e["id"]: e["waterLevel"] for e in body} == {CITY_GAUGE: 3.1, UNIVERSITY_GAUGE: 3.6}


EXPECTED: list[tuple[str, Callable[[Answer], None]]] = [
    ("the city's own river gauge", status(201)),
    ("the university's research gauge and its flood-risk model, on the university's broker",
     status(201)),
    ("the city registers the university as a source of both types", status(201)),
    ("one query on the city's broker: gauges of both organisations above 3.0 m",
     gauges_above_caution),
    ("the university's flood-risk areas, read through the city", ids(RISK_AREA)),
    ("local=true: only what the city holds itself", ids(CITY_GAUGE)),
]


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    city = Broker(store=f"sqlite:///{tmp_path}/city.db", log=tmp_path / "city.log")
    university = Broker(store=f"sqlite:///{tmp_path}/university.db",
                        log=tmp_path / "university.log")
    city.start()
    try:
        university.start()
        try:
            yield city, university
        finally:
            university.stop()
    finally:
        city.stop()


def test_one_query_answers_with_both_organisations(
    curl: str, brokers: tuple[Broker, Broker]
) -> None:
    city, university = brokers
    script = federation_block()
    assert commands_by_comment(script) == [comment for comment, _ in EXPECTED], (
        "the README's federation example changed: say in EXPECTED what each command answers"
    )
    wrapped = (
        f'curl() {{ local rc=0; command curl "$@" || rc=$?; printf "\\n{END} %s\\n" $rc; }}\n'
        + script.replace(CITY_ADDRESS, f"http://127.0.0.1:{city.port}")
        .replace(UNIVERSITY_ADDRESS, f"http://127.0.0.1:{university.port}")
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
    # the city stored nothing of the university's: the merge happens at read time
    assert httpx.get(city.url + f"entities/{UNIVERSITY_GAUGE}",
                     params={"local": "true"}).status_code == 404
