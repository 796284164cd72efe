"""The pick/omit grammar of clause 4.21: what parses, what is refused, and what it means."""

from __future__ import annotations

import pytest

from urbanos.core.projection import parse_projection
from urbanos.errors import BadRequestData


def expand(name: str) -> str:
    return "https://ex.org/" + name


def test_comma_and_pipe_separate_terms_alike() -> None:
    comma = parse_projection("id,name", expand, label="pick")
    pipe = parse_projection("id|name", expand, label="pick")
    assert comma == pipe
    assert comma.picked == {"id", "https://ex.org/name"}


def test_nested_terms_reach_linked_entities() -> None:
    proj = parse_projection("id,locatedAt{name,isIn{description}}", expand, label="pick")
    assert proj.depth == 2
    assert proj.picked == {"id", "https://ex.org/locatedAt"}
    assert proj.omitted == {"id"}  # a braced term narrows deeper, it does not omit itself
    sub = proj.nested("https://ex.org/locatedAt")
    assert sub is not None and sub.picked == {"https://ex.org/name", "https://ex.org/isIn"}
    assert proj.nested("id") is None


@pytest.mark.parametrize(
    "text",
    ["id;name", "id,locatedAt{name", "id,locatedAt{{name}", "id,,name", "id,locatedAt{,name}",
     "id,locatedAt{}", "name||speed", "", ",name", "name,"],
)
def test_malformed_projections_are_bad_request_data(text: str) -> None:
    with pytest.raises(BadRequestData):
        parse_projection(text, expand, label="pick")
