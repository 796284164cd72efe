"""The one rule of every cache (services.cluster): a load is kept only if nothing of its
tenant changed while it read; announcements reach every cache of their topic."""

from __future__ import annotations

from urbanos.services.cluster import CONTEXTS, SUBSCRIPTIONS, Generations, Invalidations


def test_a_load_is_fresh_until_its_tenant_or_everything_changes() -> None:
    g = Generations()
    token = g.token()
    g.bump("b")
    assert g.fresh(token, "a") and not g.fresh(token, "b")
    assert not g.fresh(token, None)  # a load of every tenant read b too
    later = g.token()
    assert g.fresh(later, "b") and g.fresh(later, None)
    g.bump(None)  # a lost feed: every tenant
    assert not g.fresh(later, "a") and not g.fresh(later, "never-seen")
    assert g.tenants() == {"b"}


def test_announcements_reach_the_caches_of_their_topic_in_order() -> None:
    bus = Invalidations()
    heard: list[tuple[str, str | None]] = []
    bus.subscribe(SUBSCRIPTIONS, lambda t: heard.append(("first", t)))
    bus.subscribe(SUBSCRIPTIONS, lambda t: heard.append(("second", t)))
    bus.subscribe(CONTEXTS, lambda t: heard.append(("contexts", t)))
    bus.changed(SUBSCRIPTIONS, "city")
    bus.changed(CONTEXTS, None)
    assert heard == [("first", "city"), ("second", "city"), ("contexts", None)]
