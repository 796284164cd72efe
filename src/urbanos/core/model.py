"""The stored form of an entity, shared by every layer below HTTP.

Requests are expanded into this form once, on the way in; responses are rendered from it
with the caller's @context, on the way out. Keeping one canonical shape means stores, query
evaluation and notifications never think about JSON-LD::

    {
      "id": "urn:ngsi-ld:Building:1",
      "type": ["https://example.org/Building"],          # expanded IRIs, always a list
      "scope": ["/Madrid/Gardens"],                        # optional
      "createdAt": "2024-01-01T00:00:00.000Z",
      "modifiedAt": "2024-01-01T00:00:00.000Z",
      "attrs": {
        "https://example.org/speed": [instance, ...],     # one instance per datasetId
      },
    }

An *instance* keeps the core members under their short names (see ``CORE_MEMBERS``); any
other key is a sub-attribute under its expanded IRI, whose value is one instance::

    {"type": "Property", "value": 80, "observedAt": "...", "unitCode": "KMH",
     "datasetId": "urn:ngsi-ld:Dataset:a", "createdAt": "...", "modifiedAt": "...",
     "https://example.org/accuracy": {"type": "Property", "value": 0.9}}

Property and GeoProperty values and JsonProperty ``json`` are kept verbatim (keys inside
values are never expanded); ``vocab`` values and ``objectType`` are expanded IRIs;
Relationship ``object`` is a URI string or a list of them; ListRelationship ``objectList``
is a list of ``{"object": uri}``.
"""

from __future__ import annotations

NGSI_LD = "https://uri.etsi.org/ngsi-ld/"
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"

#: attribute kind -> the member that carries its value
VALUE_MEMBER: dict[str, str] = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "VocabProperty": "vocab",
    "JsonProperty": "json",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
}
ATTRIBUTE_KINDS = frozenset(VALUE_MEMBER)

#: members of an instance that are not sub-attributes
CORE_MEMBERS = frozenset(
    {
        "type", "value", "object", "objectType", "languageMap", "vocab", "json", "valueList",
        "objectList", "observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt",
        "deletedAt", "expiresAt", "instanceId", "lang", "previousValue", "previousObject",
        "previousLanguageMap", "previousVocab", "previousJson", "previousValueList",
        "previousObjectList", "entity", "valueType", "entityIdSealed", "entityTypeSealed",
    }
)

#: expanded IRI of a core member -> its short name in the stored form
CORE_MEMBER_BY_IRI: dict[str, str] = {
    NGSI_LD + "hasValue": "value",
    NGSI_LD + "hasObject": "object",
    NGSI_LD + "hasObjectType": "objectType",
    NGSI_LD + "hasLanguageMap": "languageMap",
    NGSI_LD + "hasVocab": "vocab",
    NGSI_LD + "hasJSON": "json",
    NGSI_LD + "hasValueList": "valueList",
    NGSI_LD + "hasObjectList": "objectList",
    NGSI_LD + "observedAt": "observedAt",
    NGSI_LD + "unitCode": "unitCode",
    NGSI_LD + "datasetId": "datasetId",
    NGSI_LD + "createdAt": "createdAt",
    NGSI_LD + "modifiedAt": "modifiedAt",
    NGSI_LD + "deletedAt": "deletedAt",
    NGSI_LD + "instanceId": "instanceId",
}

#: entity-level members that are not attributes
ENTITY_MEMBERS = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt", "@context"})

LOCATION = NGSI_LD + "location"
OBSERVATION_SPACE = NGSI_LD + "observationSpace"
OPERATION_SPACE = NGSI_LD + "operationSpace"
GEO_ATTRIBUTES = frozenset({LOCATION, OBSERVATION_SPACE, OPERATION_SPACE})

#: the NGSI-LD Null of merge-patch semantics
NULL_URN = "urn:ngsi-ld:null"


def is_null(instance: dict[str, object]) -> bool:
    """Whether an instance is the NGSI-LD Null of its kind (clause 4.5.x), i.e. a deletion."""
    member = VALUE_MEMBER.get(str(instance.get("type", "Property")), "value")
    value = instance.get(member)
    if value == NULL_URN:
        return True
    if member == "languageMap":
        return isinstance(value, dict) and value.get("@none") == NULL_URN
    if member in ("valueList", "objectList"):
        return isinstance(value, list) and len(value) == 1 and (
            value[0] == NULL_URN or (isinstance(value[0], dict) and value[0].get("object") == NULL_URN)
        )
    return False
