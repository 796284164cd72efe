"""Stellio's load-test entity (REFERENCES.md), in NGSI-LD normalized form."""

from __future__ import annotations

import random
from typing import Any


def stellio_entity(i: int, *, types: int = 10) -> dict[str, Any]:
    rnd = random.Random(i)
    return {
        "id": f"urn:ngsi-ld:Entity:r{i}",
        "type": f"Entity{i % types}",
        "name": {"type": "Property", "value": "Name of my entity"},
        "description": {"type": "Property", "value": "Description of my entity"},
        "stationCode": {"type": "Property", "value": "BSS002JAWM"},
        "ammonium": [
            {"type": "Property", "value": 0.34, "unitCode": "M1",
             "observedAt": "2023-03-02T10:00:00Z", "datasetId": "urn:ngsi-ld:Dataset:Bottom"},
            {"type": "Property", "value": 0.41, "unitCode": "M1",
             "observedAt": "2023-03-02T10:00:00Z", "datasetId": "urn:ngsi-ld:Dataset:Surface"},
        ],
        "dissolvedOxygen": {"type": "Property", "value": round(rnd.uniform(0, 100), 2),
                            "sandreCode": {"type": "Property", "value": "1311"}},
        "waterTemperature": [
            {"type": "Property", "value": 10.9, "unitCode": "CEL",
             "datasetId": "urn:ngsi-ld:Dataset:Bottom"},
            {"type": "Property", "value": 12.9, "unitCode": "CEL",
             "datasetId": "urn:ngsi-ld:Dataset:Surface"},
        ],
        "servesDataset": {"type": "Relationship",
                          "object": f"urn:ngsi-ld:Dataset:SurfaceWaterMonitoring{i % 100}"},
        "location": {"type": "GeoProperty",
                     "value": {"type": "Point", "coordinates": [3.53452158, 43.48562782]}},
    }
