"""GeoJSON validation, distances and the geo-query (urbanos.core.geo)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from urbanos.core.geo import (
    EARTH_RADIUS_M,
    GeoQuery,
    geo_distance,
    geometry_bbox,
    parse_geoq,
    validate_geometry,
)
from urbanos.core.model import LOCATION
from urbanos.errors import BadRequestData

ONE_DEGREE_M = EARTH_RADIUS_M * math.pi / 180  # ~111 195 m on the sphere used
SQUARE = [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]
HOLED = [SQUARE[0], [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]]


def expand(term: str) -> str:
    return LOCATION if term == "location" else "https://example.org/" + term


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def polygon(coordinates: list[Any]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": coordinates}


def box(west: float, south: float, east: float, north: float) -> list[Any]:
    return [[[west, south], [east, south], [east, north], [west, north], [west, south]]]


def haversine(a: list[float], b: list[float]) -> float:
    """Independent oracle: the textbook great-circle formula on the module's sphere."""
    lon1, lat1, lon2, lat2 = map(math.radians, (*a[:2], *b[:2]))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def brute_distance(p: list[float], a: list[float], b: list[float], steps: int = 20000) -> float:
    """Point to lon/lat-straight edge by dense sampling."""
    return min(
        haversine(p, [a[0] + (b[0] - a[0]) * i / steps, a[1] + (b[1] - a[1]) * i / steps])
        for i in range(steps + 1)
    )


def query(georel: str, geometry: str, coordinates: Any, geoproperty: str | None = None) -> GeoQuery:
    parsed = parse_geoq(georel, geometry, coordinates, geoproperty, expand)
    assert parsed is not None
    return parsed


# --------------------------------------------------------------------------- validation

VALID = [
    point(13.4, 52.5),
    {"type": "Point", "coordinates": [-180, -90, 35.5]},
    {"type": "Point", "coordinates": [180, 90], "bbox": [180, 90, 180, 90]},
    {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
    {"type": "LineString", "coordinates": [[1, 2], [3, 4]]},
    {"type": "MultiLineString", "coordinates": [[[1, 2], [3, 4]], [[5, 6], [7, 8], [9, 9]]]},
    polygon(SQUARE),
    polygon(HOLED),
    {"type": "MultiPolygon", "coordinates": [SQUARE, box(20, 20, 30, 30)]},
    {"type": "GeometryCollection", "geometries": [point(1, 2), polygon(SQUARE)]},
    {
        "type": "GeometryCollection",
        "geometries": [{"type": "GeometryCollection", "geometries": [point(1, 2)]}],
    },
]


@pytest.mark.parametrize("value", VALID)
def test_valid_geometries_pass(value: dict[str, Any]) -> None:
    validate_geometry(value)


INVALID = {
    "not an object": [1, 2],
    "no type": {"coordinates": [1, 2]},
    "unknown type": {"type": "Circle", "coordinates": [1, 2]},
    "type case": {"type": "point", "coordinates": [1, 2]},
    "feature": {"type": "Feature", "geometry": point(1, 2), "properties": {}},
    "no coordinates": {"type": "Point"},
    "point one number": {"type": "Point", "coordinates": [1]},
    "point four numbers": {"type": "Point", "coordinates": [1, 2, 3, 4]},
    "point as string": {"type": "Point", "coordinates": "1,2"},
    "point of strings": {"type": "Point", "coordinates": ["1", "2"]},
    "point of bools": {"type": "Point", "coordinates": [True, False]},
    "null member": {"type": "Point", "coordinates": [1, None]},
    "nan": {"type": "Point", "coordinates": [math.nan, 2]},
    "infinite altitude": {"type": "Point", "coordinates": [1, 2, math.inf]},
    "huge integer": {"type": "Point", "coordinates": [1, 2, 10**400]},
    "longitude too big": {"type": "Point", "coordinates": [180.0001, 0]},
    "longitude too small": {"type": "Point", "coordinates": [-181, 0]},
    "latitude too big": {"type": "Point", "coordinates": [0, 90.5]},
    "latitude/longitude swapped": {"type": "Point", "coordinates": [52.5, 130.4]},
    "empty multipoint": {"type": "MultiPoint", "coordinates": []},
    "multipoint of numbers": {"type": "MultiPoint", "coordinates": [1, 2]},
    "one-position line": {"type": "LineString", "coordinates": [[1, 2]]},
    "line of numbers": {"type": "LineString", "coordinates": [1, 2, 3, 4]},
    "multiline with short line": {
        "type": "MultiLineString",
        "coordinates": [[[1, 2], [3, 4]], [[1, 2]]],
    },
    "open ring": polygon([[[0, 0], [1, 0], [1, 1], [0, 1]]]),
    "three-position ring": polygon([[[0, 0], [1, 0], [0, 0]]]),
    "polygon without rings": polygon([]),
    "polygon ring of numbers": polygon([[0, 0, 1, 1]]),
    "open hole": polygon([SQUARE[0], [[4, 4], [6, 4], [6, 6], [4, 6]]]),
    "bad member of multipolygon": {
        "type": "MultiPolygon",
        "coordinates": [SQUARE, [[[0, 0], [1, 1]]]],
    },
    "empty collection": {"type": "GeometryCollection", "geometries": []},
    "collection without geometries": {"type": "GeometryCollection"},
    "collection with bad member": {"type": "GeometryCollection", "geometries": [{"type": "Point"}]},
}


@pytest.mark.parametrize("value", INVALID.values(), ids=INVALID.keys())
def test_invalid_geometries_raise_bad_request_data(value: object) -> None:
    with pytest.raises(BadRequestData) as caught:
        validate_geometry(value)
    assert caught.value.status == 400
    assert caught.value.type_uri.endswith("/BadRequestData")
    assert caught.value.detail


def test_deeply_nested_collections_are_refused() -> None:
    value: dict[str, Any] = point(1, 2)
    for _ in range(20):
        value = {"type": "GeometryCollection", "geometries": [value]}
    with pytest.raises(BadRequestData, match="nested"):
        validate_geometry(value)


def test_error_detail_says_where() -> None:
    with pytest.raises(BadRequestData, match="ring 1"):
        validate_geometry(polygon([SQUARE[0], [[4, 4], [6, 4], [6, 6], [4, 6]]]))
    with pytest.raises(BadRequestData, match="latitude"):
        validate_geometry(point(0, -91))


# --------------------------------------------------------------------------- bbox


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (point(13.4, 52.5), (13.4, 52.5, 13.4, 52.5)),
        ({"type": "Point", "coordinates": [1, 2, 300]}, (1, 2, 1, 2)),
        ({"type": "MultiPoint", "coordinates": [[5, -3], [-2, 8]]}, (-2, -3, 5, 8)),
        ({"type": "LineString", "coordinates": [[0, 60], [10, 61], [4, 59]]}, (0, 59, 10, 61)),
        (
            {"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[-5, 2], [3, -7]]]},
            (-5, -7, 3, 2),
        ),
        (polygon(HOLED), (0, 0, 10, 10)),
        (
            {"type": "MultiPolygon", "coordinates": [SQUARE, box(-30, -20, -25, -15)]},
            (-30, -20, 10, 10),
        ),
        (
            {"type": "GeometryCollection", "geometries": [point(170, 5), polygon(SQUARE)]},
            (0, 0, 170, 10),
        ),
    ],
)
def test_geometry_bbox(value: dict[str, Any], expected: tuple[float, ...]) -> None:
    assert geometry_bbox(value) == pytest.approx(expected)


# --------------------------------------------------------------------------- distances


def test_one_degree_along_a_meridian() -> None:
    assert geo_distance(point(5, 45), point(5, 46)) == pytest.approx(ONE_DEGREE_M, rel=1e-9)
    assert ONE_DEGREE_M == pytest.approx(111_195, abs=1)  # WGS84 says 111 132 m at 45 deg N


def test_longitude_degree_shrinks_with_latitude() -> None:
    assert geo_distance(point(0, 0), point(1, 0)) == pytest.approx(ONE_DEGREE_M, rel=1e-9)
    assert geo_distance(point(0, 60), point(1, 60)) == pytest.approx(ONE_DEGREE_M / 2, rel=1e-3)


def test_distance_wraps_the_antimeridian() -> None:
    assert geo_distance(point(179.5, 0), point(-179.5, 0)) == pytest.approx(ONE_DEGREE_M, rel=1e-9)


def test_known_city_distance() -> None:
    paris, london = point(2.3522, 48.8566), point(-0.1276, 51.5072)
    assert geo_distance(paris, london) == pytest.approx(343_900, rel=0.01)


def test_distance_is_zero_when_geometries_touch() -> None:
    assert geo_distance(point(5, 5), polygon(SQUARE)) == 0
    assert geo_distance(point(10, 5), polygon(SQUARE)) == 0  # on the boundary
    assert geo_distance(polygon(SQUARE), polygon(box(10, 10, 20, 20))) == 0


def test_distance_to_the_interior_of_an_edge() -> None:
    line = {"type": "LineString", "coordinates": [[0, 0], [10, 0]]}
    assert geo_distance(point(5, 1), line) == pytest.approx(ONE_DEGREE_M, rel=1e-6)
    assert geo_distance(line, point(5, -0.5)) == pytest.approx(ONE_DEGREE_M / 2, rel=1e-6)


def test_distance_picks_the_metrically_closest_point_at_high_latitude() -> None:
    # from (0, 80) the line's east end is 2 deg of longitude at lat 80 (~38.6 km) away, its
    # north end 1.5 deg of latitude (~167 km); the closest point in lon/lat degrees would
    # lie mid-line, ~60 km away; metrically it is just inside the east end, ~37.5 km
    line = {"type": "LineString", "coordinates": [[2, 80], [0, 81.5]]}
    distance = geo_distance(point(0, 80), line)
    assert distance == pytest.approx(brute_distance([0, 80], [2, 80], [0, 81.5]), abs=1)
    assert 37_000 < distance < haversine([0, 80], [2, 80])


def test_distance_from_a_point_in_a_hole_is_to_the_hole() -> None:
    assert geo_distance(point(5, 5.5), polygon(HOLED)) == pytest.approx(ONE_DEGREE_M / 2, rel=1e-3)


@pytest.mark.parametrize(
    ("p", "a", "b"),
    [
        ([3, 47], [0, 45], [10, 46]),
        ([-71.2, -33.1], [-70, -34], [-72, -32.5]),
        ([20, 70], [10, 65], [30, 75]),
        ([0, 10], [1, 0], [1, 20]),
    ],
)
def test_point_to_edge_agrees_with_dense_sampling(
    p: list[float], a: list[float], b: list[float]
) -> None:
    line = {"type": "LineString", "coordinates": [a, b]}
    assert geo_distance(point(*p), line) == pytest.approx(brute_distance(p, a, b), abs=1)


def test_distance_between_polygons_and_symmetry() -> None:
    a, b = polygon(box(0, 0, 1, 1)), polygon(box(1.5, 0, 2.5, 1))
    # half a degree of longitude, shortest along the poleward edges (lat 1)
    assert geo_distance(a, b) == pytest.approx(haversine([1, 1], [1.5, 1]), abs=0.01)
    assert geo_distance(b, a) == pytest.approx(geo_distance(a, b))


# --------------------------------------------------------------------------- parsing


def test_no_geo_query_at_all() -> None:
    assert parse_geoq(None, None, None, None, expand) is None
    assert parse_geoq("", "", "", "", expand) is None


def test_parse_from_query_parameters() -> None:
    q = query("near;maxDistance==2000", "Point", "[8, 40]")
    assert (q.georel, q.geometry, q.coordinates) == ("near", "Point", [8, 40])
    assert (q.max_distance, q.min_distance, q.geoproperty) == (2000, None, LOCATION)
    assert q.georel_text == "near;maxDistance==2000"
    assert q.geometry_value == point(8, 40)


def test_parse_from_a_subscription_geoq() -> None:
    q = query("within", "Polygon", SQUARE, "observationSpace")
    assert q.coordinates == SQUARE
    assert q.geoproperty == "https://example.org/observationSpace"
    assert q.georel_text == "within"


@pytest.mark.parametrize(
    ("georel", "max_distance", "min_distance"),
    [
        ("near;minDistance==15000", None, 15000),
        ("near;maxDistance==2.5", 2.5, None),
        ("near;maxDistance==1e3", 1000, None),
        (" near ; maxDistance==10 ", 10, None),
    ],
)
def test_parse_distances(
    georel: str, max_distance: float | None, min_distance: float | None
) -> None:
    q = query(georel, "Point", "[8,40]")
    assert (q.max_distance, q.min_distance) == (max_distance, min_distance)


@pytest.mark.parametrize(
    "georel", ["within", "contains", "intersects", "equals", "disjoint", "overlaps"]
)
def test_parse_every_relation(georel: str) -> None:
    assert query(georel, "Polygon", str(SQUARE)).georel == georel


def test_geometry_name_is_case_insensitive() -> None:
    assert query("intersects", "multipolygon", [SQUARE]).geometry == "MultiPolygon"


BAD_QUERIES = {
    "georel only": ("within", None, None, None),
    "geometry only": (None, "Point", None, None),
    "coordinates only": (None, None, "[1,2]", None),
    "no coordinates": ("within", "Point", None, None),
    "no geometry": ("near;maxDistance==5", None, "[1,2]", None),
    "no georel": (None, "Point", "[1,2]", None),
    "geoproperty only": (None, None, None, "location"),
    "unknown relation": ("touches", "Point", "[8,40]", None),
    "wrong case relation": ("Within", "Point", "[8,40]", None),
    "near without distance": ("near", "Point", "[8,40]", None),
    "near with two distances": ("near;maxDistance==5;minDistance==1", "Point", "[8,40]", None),
    "single equals sign": ("near;maxDistance=5", "Point", "[8,40]", None),
    "unknown modifier": ("near;distance==5", "Point", "[8,40]", None),
    "zero distance": ("near;maxDistance==0", "Point", "[8,40]", None),
    "negative distance": ("near;maxDistance==-100", "Point", "[8,40]", None),
    "signed distance": ("near;minDistance==+100", "Point", "[8,40]", None),
    "infinite distance": ("near;maxDistance==inf", "Point", "[8,40]", None),
    "nan distance": ("near;maxDistance==NaN", "Point", "[8,40]", None),
    "overflowing distance": ("near;maxDistance==1e400", "Point", "[8,40]", None),
    "word distance": ("near;maxDistance==far", "Point", "[8,40]", None),
    "empty distance": ("near;maxDistance==", "Point", "[8,40]", None),
    "modifier on within": ("within;maxDistance==5", "Polygon", str(SQUARE), None),
    "unknown geometry": ("intersects", "Circle", "[8,40]", None),
    "collection geometry": ("intersects", "GeometryCollection", "[8,40]", None),
    "coordinates not json": ("intersects", "Point", "[8,40", None),
    "coordinates not an array": ("intersects", "Point", '{"lon": 8}', None),
    "coordinates bare numbers": ("intersects", "Point", "8,40", None),
    "coordinates of wrong depth": ("intersects", "Polygon", "[8,40]", None),
    "latitude out of range": ("intersects", "Point", "[8,95]", None),
    "open ring": ("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,1]]]", None),
    "nan coordinate": ("intersects", "Point", "[NaN, 1]", None),
}


@pytest.mark.parametrize("args", BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
def test_malformed_geo_queries_raise_bad_request_data(args: tuple[Any, ...]) -> None:
    with pytest.raises(BadRequestData) as caught:
        parse_geoq(*args, expand)
    assert caught.value.problem()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert caught.value.status == 400


def test_direct_construction_validates_too() -> None:
    with pytest.raises(BadRequestData):
        GeoQuery("near", "Point", [1, 2])
    with pytest.raises(BadRequestData):
        GeoQuery("near", "Point", [1, 2], max_distance=5, min_distance=1)
    with pytest.raises(BadRequestData):
        GeoQuery("within", "Point", [1, 2], max_distance=5)
    with pytest.raises(BadRequestData):
        GeoQuery("within", "Point", [1, 200])
    assert GeoQuery("near", "Point", [1, 2], max_distance=5).geoproperty == LOCATION


def test_equal_queries_hash_alike() -> None:
    a = query("near;maxDistance==2000", "Point", "[8,40]")
    b = query("near;maxDistance==2000.0", "Point", [8, 40])
    assert a == b and hash(a) == hash(b)
    assert len({a, b, query("near;maxDistance==2000", "Point", "[8,41]")}) == 2


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("georel", "geometry", "coordinates", "entity", "expected"),
    [
        # within: the entity lies within the query geometry
        ("within", "Polygon", SQUARE, point(2, 2), True),
        ("within", "Polygon", SQUARE, point(20, 2), False),
        ("within", "Polygon", SQUARE, point(10, 5), False),  # on the boundary only
        ("within", "Polygon", HOLED, point(5, 5), False),  # inside the hole
        ("within", "Polygon", HOLED, point(2, 2), True),
        ("within", "Polygon", SQUARE, polygon(box(1, 1, 2, 2)), True),
        ("within", "Polygon", box(1, 1, 2, 2), polygon(SQUARE), False),
        ("within", "MultiPolygon", [box(20, 20, 30, 30), SQUARE], point(25, 25), True),
        # contains: the entity contains the query geometry
        ("contains", "Point", [2, 2], polygon(SQUARE), True),
        ("contains", "Point", [5, 5], polygon(HOLED), False),
        ("contains", "Polygon", box(1, 1, 2, 2), polygon(SQUARE), True),
        ("contains", "Polygon", SQUARE, polygon(box(1, 1, 2, 2)), False),
        ("contains", "Point", [3, 4], point(3, 4), True),
        # intersects / disjoint are complements
        ("intersects", "Point", [3, 4], point(3, 4), True),
        ("intersects", "LineString", [[-5, 5], [5, 5]], polygon(SQUARE), True),
        ("intersects", "LineString", [[-5, 20], [5, 20]], polygon(SQUARE), False),
        ("intersects", "Polygon", box(10, 10, 20, 20), polygon(SQUARE), True),  # corners touch
        ("disjoint", "Polygon", box(10, 10, 20, 20), polygon(SQUARE), False),
        ("disjoint", "Point", [3, 4], point(3, 4.0001), True),
        ("disjoint", "Polygon", HOLED, point(5, 5), True),
        # equals is topological
        ("equals", "Point", [3, 4], point(3, 4), True),
        ("equals", "Point", [3, 4], {"type": "Point", "coordinates": [3, 4, 100]}, True),
        ("equals", "Point", [3, 4], point(3, 4.000001), False),
        (
            "equals",
            "Polygon",
            SQUARE,
            polygon([[[10, 0], [10, 10], [0, 10], [0, 0], [10, 0]]]),
            True,
        ),
        ("equals", "Polygon", SQUARE, polygon(box(0, 0, 10, 11)), False),
        # overlaps: same dimension, shared interior, neither contains the other
        ("overlaps", "Polygon", box(5, 5, 15, 15), polygon(SQUARE), True),
        ("overlaps", "Polygon", box(1, 1, 2, 2), polygon(SQUARE), False),
        ("overlaps", "Polygon", box(20, 20, 30, 30), polygon(SQUARE), False),
        (
            "overlaps",
            "LineString",
            [[0, 0], [2, 0]],
            {"type": "LineString", "coordinates": [[1, 0], [3, 0]]},
            True,
        ),
    ],
)
def test_topological_relations(
    georel: str, geometry: str, coordinates: Any, entity: dict[str, Any], expected: bool
) -> None:
    assert query(georel, geometry, coordinates).matches(entity) is expected


def test_near_max_distance_between_points() -> None:
    q = query("near;maxDistance==112000", "Point", "[5, 45]")
    assert q.matches(point(5, 46))  # ~111.2 km along the meridian
    assert q.matches(point(5, 45))
    assert not q.matches(point(5, 46.01))
    assert not query("near;maxDistance==111000", "Point", "[5, 45]").matches(point(5, 46))


def test_near_min_distance_between_points() -> None:
    q = query("near;minDistance==111000", "Point", "[5, 45]")
    assert q.matches(point(5, 46))
    assert not q.matches(point(5, 45.5))
    assert not q.matches(point(5, 45))


def test_near_measures_to_the_closest_point_of_the_reference() -> None:
    q = query("near;maxDistance==2000", "LineString", "[[0, 50], [10, 50]]")
    assert q.matches(point(5, 50.01))  # ~1.1 km north of the line's middle
    assert not q.matches(point(5, 50.03))
    assert q.matches(polygon(box(4, 50.005, 6, 51)))
    assert query("near;minDistance==2000", "LineString", "[[0, 50], [10, 50]]").matches(
        point(5, 50.03)
    )


def test_near_at_high_latitude_is_metric() -> None:
    line = {"type": "LineString", "coordinates": [[2, 80], [0, 81.5]]}
    assert query("near;maxDistance==40000", "Point", "[0, 80]").matches(line)
    assert not query("near;maxDistance==35000", "Point", "[0, 80]").matches(line)


def test_near_across_the_antimeridian() -> None:
    assert query("near;maxDistance==2000", "Point", "[179.99, 10]").matches(point(-179.995, 10))


def test_near_inside_a_polygon_is_distance_zero() -> None:
    assert query("near;maxDistance==1", "Polygon", SQUARE).matches(point(5, 5))
    assert not query("near;minDistance==1", "Polygon", SQUARE).matches(point(5, 5))


def test_a_malformed_stored_value_never_matches() -> None:
    q = query("disjoint", "Point", "[8, 40]")
    assert not q.matches({"type": "Point", "coordinates": [500, 0]})
    assert not q.matches("POINT (1 2)")
    assert not q.matches(None)
    assert q.matches(point(9, 40))


def test_a_self_intersecting_polygon_equals_itself() -> None:
    bowtie = [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]
    assert query("equals", "Polygon", bowtie).matches(polygon(bowtie))
    assert query("intersects", "Polygon", bowtie).matches(point(1, 1))


def test_query_geometry_is_built_once() -> None:
    q = query("intersects", "Polygon", SQUARE)
    prepared = q._prepared
    for lon in range(20):
        q.matches(point(lon, 5))
    assert q._prepared is prepared


# --------------------------------------------------------------------------- prefilter box


def bbox_of(q: GeoQuery) -> tuple[float, float, float, float]:
    found = q.candidate_bbox()
    assert found is not None
    return found


def test_candidate_bbox_of_topological_relations() -> None:
    for georel in ("within", "contains", "intersects", "equals", "overlaps"):
        assert query(georel, "Polygon", HOLED).candidate_bbox() == (0, 0, 10, 10)


def test_no_candidate_bbox_when_matches_can_be_anywhere() -> None:
    assert query("disjoint", "Polygon", SQUARE).candidate_bbox() is None
    assert query("near;minDistance==10", "Point", "[1, 2]").candidate_bbox() is None


def test_near_bbox_expands_by_the_distance() -> None:
    west, south, east, north = bbox_of(query("near;maxDistance==111195", "Point", "[0, 60]"))
    assert north == pytest.approx(61, abs=0.01) and south == pytest.approx(59, abs=0.01)
    assert east == pytest.approx(2.0, abs=0.02) and west == pytest.approx(
        -2.0, abs=0.02
    )  # 1/cos(60)


@pytest.mark.parametrize(
    ("georel", "coordinates"),
    [
        ("near;maxDistance==5000", "[13.4, 52.5]"),
        ("near;maxDistance==50000", "[0, 84.5]"),
        ("near;maxDistance==300000", "[-70, -40]"),
        ("near;maxDistance==20000", "[[10, 60], [11, 61]]"),
    ],
)
def test_every_point_in_range_falls_in_the_near_bbox(georel: str, coordinates: str) -> None:
    geometry = "LineString" if coordinates.startswith("[[") else "Point"
    q = query(georel, geometry, coordinates)
    assert q.max_distance is not None
    west, south, east, north = bbox_of(q)
    rng = random.Random(7)
    centre = q.coordinates if geometry == "Point" else q.coordinates[rng.randrange(2)]
    hits = 0
    for _ in range(500):
        lon = centre[0] + rng.uniform(-8, 8)
        lat = max(-90.0, min(90.0, centre[1] + rng.uniform(-3, 3)))
        if q.matches(point(lon, lat)):
            hits += 1
            assert west <= lon <= east and south <= lat <= north
    # aim straight at the box edges too: points just inside the distance, due east and north
    lon0, lat0 = centre
    reach = math.degrees(q.max_distance / EARTH_RADIUS_M) * 0.999
    assert q.matches(point(lon0, lat0 + reach)) and lat0 + reach <= north
    assert q.matches(point(lon0, lat0 - reach)) and lat0 - reach >= south


def test_near_bbox_near_a_pole_spans_every_longitude() -> None:
    west, south, east, north = bbox_of(query("near;maxDistance==200000", "Point", "[30, 89]"))
    assert (west, east, north) == (-180, 180, 90)
    assert south == pytest.approx(87.2, abs=0.01)
    assert query("near;maxDistance==200000", "Point", "[30, 89]").matches(point(-150, 89.5))


def test_near_bbox_across_the_antimeridian_spans_every_longitude() -> None:
    q = query("near;maxDistance==5000", "Point", "[179.99, 10]")
    west, south, east, north = bbox_of(q)
    assert (west, east) == (-180, 180)
    assert south < 10 < north
