"""History rows as both SQL stores keep them: the indexed columns of an instance, the
document column, and the time-window condition. One definition, two placeholder styles."""

from __future__ import annotations

from typing import Any

import orjson

from urbanos.core.temporal import TemporalQuery, instance_id, numeric_value, time_of, value_key
from urbanos.storage.base import Write
from urbanos.types import JSONObject

#: timeproperty -> column (a closed list: never interpolate anything else)
COLUMN = {"observedAt": "observed_ts", "createdAt": "created_ts", "modifiedAt": "modified_ts",
          "deletedAt": "deleted_ts"}
#: the sums stddev is computed from
STDDEV_SQL = ("count(num)", "sum(num)", "sum(num * num)")


def dataset_key(value: str | None) -> str:
    """The default instance is stored under the empty datasetId (a key column is NOT NULL)."""
    return value or ""


def entity_row(w: Write, now: str) -> tuple[str, list[str], list[str] | None, str, str | None]:
    """(time, types, scope, createdAt, deletedAt) of a write's ``temporal_entities`` row;
    ``now`` stands in when the write carries no modifiedAt (a delete)."""
    after = w.entity
    at = str(after.get("modifiedAt") or now) if after else now
    doc = after or w.before or {}
    scope = doc.get("scope") if after is not None else None
    return (at, doc.get("type", []), scope or None, doc.get("createdAt", at),
            None if after is not None else at)


def instance_columns(inst: JSONObject) -> tuple[Any, ...]:
    """The indexed columns of an instance, computed once when it is written."""
    num = numeric_value(inst)
    return (
        time_of(inst, "observedAt"), time_of(inst, "createdAt") or 0,
        time_of(inst, "modifiedAt") or 0, time_of(inst, "deletedAt"), num,
        None if num is not None else value_key(inst),
        orjson.dumps({k: v for k, v in inst.items() if k != "instanceId"}).decode(),
    )


def instance_from_row(pk: int, doc: str) -> JSONObject:
    inst: JSONObject = orjson.loads(doc)
    inst["instanceId"] = instance_id(pk)
    return inst


def window_sql(query: TemporalQuery, mark: str) -> tuple[str, list[Any]]:
    """``AND`` conditions selecting the query's time window; ``mark`` is ``?`` or ``%s``."""
    col = COLUMN[query.timeproperty]
    sql, params = f" AND {col} IS NOT NULL", []
    if query.start is not None:
        sql += f" AND {col} >= {mark}"
        params.append(query.start)
    if query.end is not None:
        sql += f" AND {col} < {mark}"
        params.append(query.end)
    return sql, params
