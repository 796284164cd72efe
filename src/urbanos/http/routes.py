"""The route table, and nothing else."""

from __future__ import annotations

from starlette.convertors import StringConvertor, register_url_convertor
from starlette.routing import Route

from urbanos.http.admin_routes import ADMIN_ROUTES
from urbanos.http.endpoints import (
    admin,
    batch,
    csource_subscriptions,
    discovery,
    entities,
    entity_map_queries,
    entity_maps,
    entity_reads,
    info,
    jsonld_contexts,
    landing,
    ops,
    registrations,
    remote_notifications,
    snapshots,
    subscriptions,
    temporal,
    temporal_reads,
)


class SegmentConvertor(StringConvertor):
    """One path segment, possibly empty: ``/entities//attrs`` reaches its handler, which
    rejects the empty id as BadRequestData instead of the router answering 404."""

    regex = "[^/]*"


register_url_convertor("segment", SegmentConvertor())

P = "/ngsi-ld/v1"
T = P + "/temporal/entities"
TE = T + "/{entity_id:segment}"
E = P + "/entities/{entity_id:segment}"
S = P + "/subscriptions/{subscription_id:segment}"
SN = P + "/snapshots/{snapshot_id:segment}"
CR = P + "/csourceRegistrations/{registration_id:segment}"
CS = P + "/csourceSubscriptions/{subscription_id:segment}"

ROUTES = [
    Route("/", landing.landing, methods=["GET"]),
    Route("/health", ops.health, methods=["GET"]),
    Route("/metrics", ops.metrics, methods=["GET"]),
    Route("/openapi.json", ops.openapi, methods=["GET"]),
    Route("/docs", ops.docs, methods=["GET"]),
    Route("/version", ops.version, methods=["GET"]),
    Route("/admin/dead-letters", admin.list_dead_letters, methods=["GET"]),
    Route("/admin/dead-letters/{dead_id}/retry", admin.retry_dead_letter, methods=["POST"]),
    Route("/admin/dead-letters/{dead_id}", admin.delete_dead_letter, methods=["DELETE"]),
    Route(P + "/entities", entities.create_entity, methods=["POST"]),
    Route(P + "/entities", entity_reads.query_entities, methods=["GET"]),
    Route(P + "/entities", entities.purge_entities, methods=["DELETE"]),
    Route(P + "/entities", entities.entity_without_id, methods=["PUT", "PATCH"]),
    Route(E, entity_reads.retrieve_entity, methods=["GET"]),
    Route(E, entities.delete_entity, methods=["DELETE"]),
    Route(E, entities.replace_entity, methods=["PUT"]),
    Route(E, entities.merge_entity, methods=["PATCH"]),
    Route(E + "/attrs", entities.append_attrs, methods=["POST"]),
    Route(E + "/attrs", entities.update_attrs, methods=["PATCH"]),
    Route(E + "/attrs/{attr_id:segment}", entities.patch_attr, methods=["PATCH"]),
    Route(E + "/attrs/{attr_id:segment}", entities.replace_attr, methods=["PUT"]),
    Route(E + "/attrs/{attr_id:segment}", entities.delete_attr, methods=["DELETE"]),
    Route(P + "/entityOperations/create", batch.batch_create, methods=["POST"]),
    Route(P + "/entityOperations/upsert", batch.batch_upsert, methods=["POST"]),
    Route(P + "/entityOperations/update", batch.batch_update, methods=["POST"]),
    Route(P + "/entityOperations/delete", batch.batch_delete, methods=["POST"]),
    Route(P + "/entityOperations/merge", batch.batch_merge, methods=["POST"]),
    Route(P + "/entityOperations/query", entity_reads.query_post, methods=["POST"]),
    Route(P + "/types", discovery.list_types, methods=["GET"]),
    Route(P + "/types/{type}", discovery.retrieve_type, methods=["GET"]),
    Route(P + "/attributes", discovery.list_attributes, methods=["GET"]),
    Route(P + "/attributes/{attr}", discovery.retrieve_attribute, methods=["GET"]),
    Route(P + "/info/sourceIdentity", info.source_identity, methods=["GET"]),
    Route(P + "/jsonldContexts", jsonld_contexts.add_context, methods=["POST"]),
    Route(P + "/jsonldContexts", jsonld_contexts.list_contexts, methods=["GET"]),
    Route(P + "/jsonldContexts/{context_id:path}", jsonld_contexts.serve_context,
          methods=["GET"]),
    Route(P + "/jsonldContexts/{context_id:path}", jsonld_contexts.delete_context,
          methods=["DELETE"]),
    Route(P + "/entityMaps", entity_map_queries.create_entity_map, methods=["GET"]),
    Route(P + "/temporal/entityMaps", entity_map_queries.create_temporal_entity_map,
          methods=["GET"]),
    Route(P + "/entityMaps/{map_id}", entity_maps.retrieve_entity_map, methods=["GET"]),
    Route(P + "/entityMaps/{map_id}", entity_maps.update_entity_map, methods=["PATCH"]),
    Route(P + "/entityMaps/{map_id}", entity_maps.delete_entity_map, methods=["DELETE"]),
    Route(P + "/subscriptions", subscriptions.create_subscription, methods=["POST"]),
    Route(P + "/subscriptions", subscriptions.query_subscriptions, methods=["GET"]),
    Route(S, subscriptions.retrieve_subscription, methods=["GET"]),
    Route(S, subscriptions.update_subscription, methods=["PATCH"]),
    Route(S, subscriptions.delete_subscription, methods=["DELETE"]),
    Route(P + "/csourceRegistrations", registrations.create_registration, methods=["POST"]),
    Route(P + "/csourceRegistrations", registrations.query_registrations, methods=["GET"]),
    Route(CR, registrations.retrieve_registration, methods=["GET"]),
    Route(CR, registrations.update_registration, methods=["PATCH"]),
    Route(CR, registrations.delete_registration, methods=["DELETE"]),
    Route(P + "/csourceSubscriptions", csource_subscriptions.create_csource_subscription,
          methods=["POST"]),
    Route(P + "/csourceSubscriptions", csource_subscriptions.query_csource_subscriptions,
          methods=["GET"]),
    Route(CS, csource_subscriptions.retrieve_csource_subscription, methods=["GET"]),
    Route(CS, csource_subscriptions.update_csource_subscription, methods=["PATCH"]),
    Route(CS, csource_subscriptions.delete_csource_subscription, methods=["DELETE"]),
    Route(remote_notifications.PATH, remote_notifications.remote_notify, methods=["POST"]),
    Route(P + "/snapshots", snapshots.create_snapshot, methods=["POST"]),
    Route(P + "/snapshots", snapshots.list_snapshots, methods=["GET"]),
    Route(P + "/snapshots", snapshots.purge_snapshots, methods=["DELETE"]),
    Route(SN, snapshots.retrieve_snapshot, methods=["GET"]),
    Route(SN, snapshots.update_snapshot, methods=["PATCH"]),
    Route(SN, snapshots.delete_snapshot, methods=["DELETE"]),
    Route(SN + "/clone", snapshots.clone_snapshot, methods=["POST"]),
    Route(T, temporal.upsert_temporal, methods=["POST"]),
    Route(T, temporal_reads.query_temporal, methods=["GET"]),
    Route(TE, temporal_reads.retrieve_temporal, methods=["GET"]),
    Route(TE, temporal.delete_temporal, methods=["DELETE"]),
    Route(TE + "/attrs", temporal.add_temporal_attrs, methods=["POST"]),
    Route(TE + "/attrs/{attr_id:segment}", temporal.delete_temporal_attr, methods=["DELETE"]),
    Route(TE + "/attrs/{attr_id:segment}/{instance_id:segment}", temporal.delete_instance,
          methods=["DELETE"]),
    # a PATCH without an attribute name or instanceId matches only the DELETE routes: 405
    Route(TE + "/attrs/{attr_id}/{instance_id}", temporal.modify_instance, methods=["PATCH"]),
    Route(P + "/temporal/entityOperations/query", temporal_reads.query_temporal_post,
          methods=["POST"]),
    *ADMIN_ROUTES,
]
