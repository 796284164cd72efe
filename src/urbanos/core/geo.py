"""GeoJSON validation and the NGSI-LD geo-query (ETSI GS CIM 009, clause 4.10).

Geometries stay plain GeoJSON dicts everywhere else; shapely is used only here, to evaluate
a query against one stored geometry (query endpoints on the memory store, subscription
matching, the post-filter after an R*Tree/PostGIS prefilter).

Semantics chosen, so every backend can agree with this reference:

* Edges are straight lines in longitude/latitude, as RFC 7946 says; the topological
  relations (within, contains, intersects, equals, disjoint, overlaps) are shapely's planar
  predicates on lon/lat. The entity geometry is the subject: ``within`` means "the entity's
  geometry lies within the query geometry", ``contains`` "the entity's geometry contains it".
* ``near`` distances are great-circle (haversine) metres on a sphere of the IUGG mean Earth
  radius; against WGS84 this errs by at most about 0.5 %. The distance between two
  geometries is 0 when they intersect, otherwise the smallest vertex-to-edge distance in
  either direction, each found numerically along the lon/lat edge. Picking the closest
  points metrically, not in lon/lat degrees, matters at high latitudes.
* Empty geometries (``"coordinates": []``) are rejected: they cannot be indexed or matched.
* Self-intersecting polygons are legal GeoJSON and are related as sent (GEOS >= 3.13 copes);
  repairing one side only would make a geometry unequal to itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import shapely
from shapely.errors import GEOSException
from shapely.geometry import shape

from urbanos.core.model import LOCATION
from urbanos.errors import BadRequestData

__all__ = [
    "EARTH_RADIUS_M",
    "GEORELS",
    "QUERY_GEOMETRIES",
    "GeoQuery",
    "geo_distance",
    "geometry_bbox",
    "parse_geoq",
    "validate_geometry",
]

#: IUGG mean Earth radius, the sphere used for every distance in this module
EARTH_RADIUS_M = 6_371_008.8
#: the relations of the geo-query grammar
GEORELS = frozenset({"near", "within", "contains", "intersects", "equals", "disjoint", "overlaps"})
#: geometry types a query may use: GeometryCollection has no ``coordinates`` to send
QUERY_GEOMETRIES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
)

BBox = tuple[float, float, float, float]
_Array = npt.NDArray[np.float64]
_MAX_NESTING = 8  # GeometryCollection depth; deeper is abuse, not data
# PositiveNumber: JSON number syntax without sign; zero and overflow are refused after float()
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_DISTANCE = re.compile(r"(maxDistance|minDistance)==(.*)")


# --------------------------------------------------------------------------- validation


def validate_geometry(value: object) -> None:
    """Raise BadRequestData unless ``value`` is a well-formed RFC 7946 geometry object."""
    _validate(value, "geometry", 0)


def _validate(value: object, where: str, depth: int) -> None:
    if not isinstance(value, dict):
        raise BadRequestData(f"{where}: a GeoJSON geometry must be a JSON object")
    gtype = value.get("type")
    if gtype == "GeometryCollection":
        if depth >= _MAX_NESTING:
            raise BadRequestData(f"{where}: GeometryCollections nested too deeply")
        members = value.get("geometries")
        if not isinstance(members, list) or not members:
            raise BadRequestData(f"{where}: 'geometries' must be a non-empty array")
        for i, member in enumerate(members):
            _validate(member, f"{where}.geometries[{i}]", depth + 1)
        return
    if gtype not in _CHECKS:
        raise BadRequestData(f"{where}: unsupported GeoJSON geometry type {gtype!r}")
    if "coordinates" not in value:
        raise BadRequestData(f"{where}: a {gtype} needs 'coordinates'")
    _CHECKS[gtype](value["coordinates"], f"{where} {gtype}")


def _array(value: object, where: str, minimum: int = 1) -> list[Any]:
    if not isinstance(value, (list, tuple)) or len(value) < minimum:
        raise BadRequestData(f"{where}: expected an array of at least {minimum} element(s)")
    return list(value)


def _position(value: object, where: str) -> None:
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 3):
        raise BadRequestData(f"{where}: a position is an array of 2 or 3 numbers")
    for number in value:
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise BadRequestData(f"{where}: position members must be numbers")
        try:
            finite = math.isfinite(float(number))
        except OverflowError:
            finite = False
        if not finite:
            raise BadRequestData(f"{where}: position members must be finite numbers")
    if not -180 <= value[0] <= 180:
        raise BadRequestData(f"{where}: longitude {value[0]} is outside [-180, 180]")
    if not -90 <= value[1] <= 90:
        raise BadRequestData(f"{where}: latitude {value[1]} is outside [-90, 90]")


def _positions(value: object, where: str, minimum: int) -> None:
    for i, pos in enumerate(_array(value, where, minimum)):
        _position(pos, f"{where}[{i}]")


def _line(value: object, where: str) -> None:
    _positions(value, where, 2)


def _polygon(value: object, where: str) -> None:
    for i, ring in enumerate(_array(value, where)):
        _positions(ring, f"{where} ring {i}", 4)
        if list(ring[0]) != list(ring[-1]):
            raise BadRequestData(f"{where} ring {i}: a linear ring must end where it starts")


def _multi(check: Callable[[object, str], None]) -> Callable[[object, str], None]:
    def run(value: object, where: str) -> None:
        for i, part in enumerate(_array(value, where)):
            check(part, f"{where}[{i}]")

    return run


_CHECKS: dict[str, Callable[[object, str], None]] = {
    "Point": _position,
    "MultiPoint": _multi(_position),
    "LineString": _line,
    "MultiLineString": _multi(_line),
    "Polygon": _polygon,
    "MultiPolygon": _multi(_polygon),
}


# --------------------------------------------------------------------------- coordinates


def _parts(value: dict[str, Any]) -> Iterator[tuple[list[Any], bool]]:
    """Yield (position sequence, is_path) for every part: paths have edges, points do not."""
    gtype = value["type"]
    coords: Any = value.get("coordinates")
    if gtype == "GeometryCollection":
        for member in value["geometries"]:
            yield from _parts(member)
    elif gtype == "Point":
        yield [coords], False
    elif gtype == "MultiPoint":
        yield coords, False
    elif gtype == "LineString":
        yield coords, True
    elif gtype in ("MultiLineString", "Polygon"):
        for path in coords:
            yield path, True
    elif gtype == "MultiPolygon":
        for polygon in coords:
            for ring in polygon:
                yield ring, True


def geometry_bbox(value: dict[str, Any]) -> BBox:
    """(min_lon, min_lat, max_lon, max_lat) of a validated geometry, for R*Tree indexing."""
    lons: list[float] = []
    lats: list[float] = []
    for positions, _ in _parts(value):
        for pos in positions:
            lons.append(pos[0])
            lats.append(pos[1])
    return float(min(lons)), float(min(lats)), float(max(lons)), float(max(lats))


@dataclass(frozen=True)
class _Metric:
    """A geometry ready for distance maths: vertices and edges in radians, edge length bounds."""

    vertices: _Array  # (n, 2): lon, lat
    edges: _Array  # (m, 4): lon1, lat1, lon2, lat2; isolated points are zero-length edges
    lengths: _Array  # (m,): upper bound of each edge's length in metres

    @classmethod
    def of(cls, value: dict[str, Any]) -> _Metric:
        vertices: list[tuple[float, float]] = []
        edges: list[tuple[float, float, float, float]] = []
        for positions, is_path in _parts(value):
            pts = [(float(p[0]), float(p[1])) for p in positions]
            vertices.extend(pts)
            if is_path:
                edges.extend((a[0], a[1], b[0], b[1]) for a, b in zip(pts, pts[1:], strict=False))
            else:
                edges.extend((p[0], p[1], p[0], p[1]) for p in pts)
        v = np.radians(np.asarray(vertices, dtype=np.float64).reshape(-1, 2))
        e = np.radians(np.asarray(edges, dtype=np.float64).reshape(-1, 4))
        # along a lon/lat-straight edge ds <= R*sqrt(dlat^2 + (cos(lat)_max * dlon)^2)
        lat1, lat2 = e[:, 1], e[:, 3]
        crosses_equator = np.sign(lat1) != np.sign(lat2)
        cos_max = np.where(crosses_equator, 1.0, np.cos(np.minimum(np.abs(lat1), np.abs(lat2))))
        lengths = EARTH_RADIUS_M * np.hypot(lat2 - lat1, cos_max * (e[:, 2] - e[:, 0]))
        return cls(v, e, lengths * (1 + 1e-9))


def _haversine(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> Any:
    """Great-circle distance in metres between arrays of radian coordinates."""
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _along(points: _Array, edges: _Array, t: _Array) -> _Array:
    """Distance from each point to the position at fraction(s) ``t`` of its edge."""
    lon = edges[:, 0:1] + t * (edges[:, 2:3] - edges[:, 0:1])
    lat = edges[:, 1:2] + t * (edges[:, 3:4] - edges[:, 1:2])
    result: _Array = _haversine(points[:, 0:1], points[:, 1:2], lon, lat)
    return result


def _closest_on_edges(points: _Array, edges: _Array) -> _Array:
    """Minimum distance from each point to its paired edge: coarse scan, then golden section."""
    samples = np.linspace(0.0, 1.0, 9)
    grid = _along(points, edges, np.broadcast_to(samples, (len(points), 9)))
    best = grid.argmin(axis=1)
    lo = samples[np.maximum(best - 1, 0)][:, None]
    hi = samples[np.minimum(best + 1, 8)][:, None]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = _along(points, edges, c), _along(points, edges, d)
    for _ in range(40):  # shrinks the bracket ~1e-8 times: sub-metre on any real edge
        left = fc < fd  # the minimum lies in [lo, d] when true, in [c, hi] otherwise
        hi, lo = np.where(left, d, hi), np.where(left, lo, c)
        kept_t, kept_f = np.where(left, c, d), np.where(left, fc, fd)
        new_t = np.where(left, hi - ratio * (hi - lo), lo + ratio * (hi - lo))
        new_f = _along(points, edges, new_t)
        c, fc = np.where(left, new_t, kept_t), np.where(left, new_f, kept_f)
        d, fd = np.where(left, kept_t, new_t), np.where(left, kept_f, new_f)
    found: _Array = np.minimum(grid.min(axis=1), np.minimum(fc, fd)[:, 0])
    return found


def _points_to_edges(points: _Array, target: _Metric, best: float, stop: float) -> float:
    """Lower ``best`` to the smallest point-to-edge distance; return early below ``stop``."""
    edges, lengths = target.edges, target.lengths
    step = max(1, 65_536 // len(edges))  # at most ~64k point-edge pairs in memory at once
    for start in range(0, len(points), step):
        chunk = points[start : start + step]
        plon, plat = chunk[:, 0:1], chunk[:, 1:2]
        to_a = _haversine(plon, plat, edges[None, :, 0], edges[None, :, 1])
        to_b = _haversine(plon, plat, edges[None, :, 2], edges[None, :, 3])
        best = min(best, float(to_a.min()), float(to_b.min()))
        if best < stop:
            return best
        # triangle inequality: every point of an edge is >= (d(p,a) + d(p,b) - length) / 2 away
        bound = (to_a + to_b - lengths[None, :]) / 2
        rows, cols = np.nonzero((bound < best) & (lengths[None, :] > 0))
        if len(rows):
            found = _closest_on_edges(chunk[rows], edges[cols])
            best = min(best, float(found.min()))
            if best < stop:
                return best
    return best


def _metric_distance(a: _Metric, b: _Metric, stop: float = 0.0) -> float:
    best = _points_to_edges(a.vertices, b, math.inf, stop)
    if best < stop:
        return best
    return _points_to_edges(b.vertices, a, best, stop)


def geo_distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Great-circle distance in metres between two validated geometries (0 if they touch)."""
    if shapely.intersects(shape(a), shape(b)):
        return 0.0
    return _metric_distance(_Metric.of(a), _Metric.of(b))


# --------------------------------------------------------------------------- the query

#: georel -> predicate called as (query, entity): the prepared query geometry must come
#: first to be used, so each relation is written from the query's side
_RELATIONS: dict[str, Callable[[Any, Any], Any]] = {
    "within": shapely.contains,
    "contains": shapely.within,
    "intersects": shapely.intersects,
    "disjoint": shapely.disjoint,
    "overlaps": shapely.overlaps,
    "equals": shapely.equals,
}


@dataclass(frozen=True)
class GeoQuery:
    """One parsed geo-query; building it validates it and prepares the shapely geometry once.

    ``georel`` is the bare relation name (``"near"``, ``"within"``, ...); the distance of a
    ``near`` query is in ``max_distance`` or ``min_distance`` (metres); ``georel_text``
    gives back the wire form. ``geoproperty`` is an expanded IRI.
    """

    georel: str
    geometry: str
    coordinates: Any
    geoproperty: str = LOCATION
    max_distance: float | None = None
    min_distance: float | None = None
    _prepared: Any = field(init=False, repr=False, compare=False)
    _metric: _Metric = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.georel not in GEORELS:
            raise BadRequestData(f"georel: unknown geo-relationship {self.georel!r}")
        distances = [d for d in (self.max_distance, self.min_distance) if d is not None]
        if self.georel == "near" and len(distances) != 1:
            raise BadRequestData("georel: near takes exactly one of maxDistance or minDistance")
        if self.georel != "near" and distances:
            raise BadRequestData("georel: only near takes a distance")
        if distances and not (math.isfinite(distances[0]) and distances[0] > 0):
            raise BadRequestData("georel: the distance must be a finite number above 0")
        if self.geometry not in QUERY_GEOMETRIES:
            raise BadRequestData(f"geometry: unsupported query geometry {self.geometry!r}")
        value = self.geometry_value
        validate_geometry(value)
        geom = shape(value)  # kept as sent: repairing only one side would break ``equals``
        shapely.prepare(geom)  # the query geometry is tested against every candidate
        object.__setattr__(self, "_prepared", geom)
        object.__setattr__(self, "_metric", _Metric.of(value))

    def __hash__(self) -> int:
        # coordinates are lists, so hash their bbox: equal queries have equal boxes
        box = geometry_bbox(self.geometry_value)
        return hash(
            (
                self.georel,
                self.geometry,
                box,
                self.geoproperty,
                self.max_distance,
                self.min_distance,
            )
        )

    @property
    def geometry_value(self) -> dict[str, Any]:
        """The reference geometry as a GeoJSON object."""
        return {"type": self.geometry, "coordinates": self.coordinates}

    @property
    def georel_text(self) -> str:
        """The georel as sent on the wire, e.g. ``near;maxDistance==2000``."""
        named = (("maxDistance", self.max_distance), ("minDistance", self.min_distance))
        for name, distance in named:
            if distance is not None:
                number = int(distance) if distance.is_integer() else distance
                return f"{self.georel};{name}=={number}"
        return self.georel

    def matches(self, value: object) -> bool:
        """Whether a stored geometry (a GeoProperty value) satisfies the query.

        Anything that is not a valid geometry does not match, rather than failing the query.
        """
        try:
            validate_geometry(value)
        except BadRequestData:
            return False
        assert isinstance(value, dict)
        subject = shape(value)
        try:
            return self._relate(self._prepared, subject, value)
        except GEOSException:  # an older GEOS on a self-intersecting polygon: repair both
            repaired = shapely.make_valid(self._prepared)
            return self._relate(repaired, shapely.make_valid(subject), value)

    def _relate(self, query: Any, subject: Any, value: dict[str, Any]) -> bool:
        if self.georel != "near":
            return bool(_RELATIONS[self.georel](query, subject))
        limit = self.max_distance if self.max_distance is not None else self.min_distance
        assert limit is not None
        if shapely.intersects(query, subject):
            distance = 0.0
        else:  # stops early once the distance is known to be below the limit
            distance = _metric_distance(self._metric, _Metric.of(value), limit)
        return distance <= limit if self.max_distance is not None else distance >= limit

    def candidate_bbox(self) -> BBox | None:
        """A box every matching geometry intersects, for an index prefilter; None if none can."""
        if self.georel == "disjoint" or self.min_distance is not None:
            return None
        min_lon, min_lat, max_lon, max_lat = geometry_bbox(self.geometry_value)
        if self.max_distance is None:
            return min_lon, min_lat, max_lon, max_lat
        # a spherical cap of angle theta spans theta in latitude and, around a centre at
        # latitude phi, asin(sin(theta) / cos(phi)) in longitude; widened a little for safety
        theta = self.max_distance / EARTH_RADIUS_M * 1.001 + 1e-9
        dlat = math.degrees(theta)
        south, north = min_lat - dlat, max_lat + dlat
        if south <= -90 or north >= 90 or theta >= math.pi / 2:
            return -180.0, max(south, -90.0), 180.0, min(north, 90.0)  # the cap holds a pole
        phi = math.radians(max(abs(min_lat), abs(max_lat)))
        ratio = math.sin(theta) / math.cos(phi)
        if ratio >= 1:
            return -180.0, south, 180.0, north
        dlon = math.degrees(math.asin(ratio))
        west, east = min_lon - dlon, max_lon + dlon
        if west < -180 or east > 180:
            return -180.0, south, 180.0, north  # wraps the antimeridian: no single box
        return west, south, east, north


# --------------------------------------------------------------------------- parsing


def coordinates_of(value: Any, label: str) -> list[Any]:
    """Coordinates given as a JSON array, or as its text (a query parameter)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise BadRequestData(f"{label}: not a JSON array ({exc})") from None
    if not isinstance(value, list):
        raise BadRequestData(f"{label}: must be a JSON array")
    return value


def parse_geoq(
    georel: str | None,
    geometry: str | None,
    coordinates: str | list[Any] | None,
    geoproperty: str | None,
    expand: Callable[[str], str],
) -> GeoQuery | None:
    """Build a GeoQuery from query parameters or a subscription's geoQ member.

    Empty strings count as absent (clients send ``geoproperty=``). Every malformed part
    raises BadRequestData, the type CIM 009 clause 5.7.2 gives for an invalid geo-query.
    """
    georel, geometry, geoproperty = (
        None if x is None or x == "" else x for x in (georel, geometry, geoproperty)
    )
    if coordinates == "":
        coordinates = None
    given = (georel, geometry, coordinates)
    if all(x is None for x in given):
        if geoproperty is not None:
            raise BadRequestData("geoproperty needs georel, geometry and coordinates")
        return None
    names = ("georel", "geometry", "coordinates")
    missing = [name for name, x in zip(names, given, strict=True) if x is None]
    if missing:
        raise BadRequestData(f"geo-query incomplete: missing {', '.join(missing)}")
    if not isinstance(georel, str) or not isinstance(geometry, str):
        raise BadRequestData("georel and geometry must be strings")
    relation, max_distance, min_distance = _parse_georel(georel)
    canonical = {name.lower(): name for name in QUERY_GEOMETRIES}.get(geometry.strip().lower())
    if canonical is None:
        raise BadRequestData(f"geometry: unsupported query geometry {geometry!r}")
    coordinates = coordinates_of(coordinates, "coordinates")
    if geoproperty is not None and not isinstance(geoproperty, str):
        raise BadRequestData("geoproperty must be a string")
    prop = LOCATION if geoproperty is None else expand(geoproperty.strip())
    return GeoQuery(relation, canonical, coordinates, prop, max_distance, min_distance)


def _parse_georel(text: str) -> tuple[str, float | None, float | None]:
    """``near;maxDistance==N`` | ``near;minDistance==N`` | a bare relation name."""
    name, *modifiers = (part.strip() for part in text.split(";"))
    if name not in GEORELS:
        raise BadRequestData(f"georel: unknown geo-relationship {name!r}")
    if name != "near":
        if modifiers:
            raise BadRequestData(f"georel: {name} takes no modifiers")
        return name, None, None
    if len(modifiers) != 1:
        raise BadRequestData("georel: near needs exactly one of maxDistance==N or minDistance==N")
    match = _DISTANCE.fullmatch(modifiers[0])
    if match is None:
        raise BadRequestData(
            f"georel: expected maxDistance==N or minDistance==N, got {modifiers[0]!r}"
        )
    literal = match.group(2).strip()
    distance = float(literal) if _NUMBER.fullmatch(literal) else math.nan
    if not (math.isfinite(distance) and distance > 0):
        raise BadRequestData(
            f"georel: distance must be a positive number of metres, got {literal!r}"
        )
    if match.group(1) == "maxDistance":
        return name, distance, None
    return name, None, distance
