"""The policy function: roles, ownership, specificAccessPolicy and grants decide who may do
what to which entity, and which attributes are hidden; ``view`` must agree with ``decide``."""

from __future__ import annotations

import copy
import random

import pytest

from urbanos.core.policy import (
    ANONYMOUS,
    ANY_TENANT,
    OPEN,
    SPECIFIC_ACCESS_POLICY,
    UNRESTRICTED,
    Action,
    Assignee,
    Decision,
    Grant,
    Principal,
    Role,
    Target,
    decide,
    view,
)
from urbanos.types import JSONObject

CITY, OTHER = "city", "other"
EX = "https://ex.org/"
BUILDING, PARKING, PARK = EX + "Building", EX + "Parking", EX + "Park"
NAME, SPEED, OWNER_NAME = EX + "name", EX + "speed", EX + "ownerName"

ALICE = Principal("oidc", subject="alice", issuer="https://idp.city", client="portal",
                  claims={"groups": frozenset({"traffic", "staff"})})
BOB = Principal("oidc", subject="bob", issuer="https://idp.city",
                claims={"groups": frozenset({"parks"})})
DEVICE = Principal("apikey", subject="k1")
R, W, S, A, OWN = Action.READ, Action.WRITE, Action.SUBSCRIBE, Action.ADMIN, Action.OWN


def prop(value: object) -> list[JSONObject]:
    return [{"type": "Property", "value": value}]


def entity(eid: str = "urn:ngsi-ld:Building:1", types: tuple[str, ...] = (BUILDING,), *,
           scope: list[str] | None = None, owner: str | None = None,
           policy: str | None = None, attrs: tuple[str, ...] = (NAME, SPEED, OWNER_NAME),
           ) -> JSONObject:
    doc: JSONObject = {"id": eid, "type": list(types), "createdAt": "2024-01-01T00:00:00.000Z",
                       "attrs": {a: prop(a.rsplit("/", 1)[-1]) for a in attrs}}
    if scope is not None:
        doc["scope"] = scope
    if owner is not None:
        doc["owner"] = owner
    if policy is not None:
        doc["attrs"][SPECIFIC_ACCESS_POLICY] = prop(policy)
    return doc


def grant(assignee: str, *actions: Action, tenant: str = CITY, gid: str = "g",
          **target: object) -> Grant:
    return Grant(gid, tenant, Assignee.parse(assignee), frozenset(actions),
                 Target(**target))  # type: ignore[arg-type]


def with_roles(principal: Principal, roles: dict[str, set[Role]]) -> Principal:
    return Principal(principal.kind, principal.subject, principal.client, principal.issuer,
                     {t: frozenset(r) for t, r in roles.items()}, principal.claims)


def shown_attrs(principal: Principal, grants: list[Grant], doc: JSONObject) -> set[str] | None:
    out = view(principal, CITY, grants).show(doc)
    return None if out is None else set(out["attrs"])


# -- assignees ---------------------------------------------------------------------------

@pytest.mark.parametrize(("assignee", "principal", "covered"), [
    ("subject:alice", ALICE, True),
    ("subject:alice", BOB, False),
    ("subject:alice", ANONYMOUS, False),
    ("subject:k1", DEVICE, True),  # an API key's subject is its key id
    ("subject:k1", ALICE, False),
    ("subject:portal", ALICE, False),  # a subject, not the client it called through
    ("claim:groups=traffic", ALICE, True),
    ("claim:groups=traffic", BOB, False),
    ("claim:roles=traffic", ALICE, False),  # the value under another claim name
    ("claim:groups=traffic", ANONYMOUS, False),
    ("authenticated", ALICE, True),
    ("authenticated", DEVICE, True),
    ("authenticated", ANONYMOUS, False),
    ("public", ANONYMOUS, True),
    ("public", DEVICE, True),
])
def test_assignee_covers(assignee: str, principal: Principal, covered: bool) -> None:
    assert Assignee.parse(assignee).covers(principal) is covered


# -- targets -----------------------------------------------------------------------------

def test_an_empty_target_covers_every_entity() -> None:
    assert Target().covers(entity())
    assert Target().covers(entity("urn:x", (PARK,), scope=["/z"]))


def test_target_ids_and_id_pattern_either_one_selects() -> None:
    t = Target(ids=("urn:ngsi-ld:Building:1",), id_pattern="^urn:ngsi-ld:Parking:")
    assert t.covers(entity("urn:ngsi-ld:Building:1"))
    assert t.covers(entity("urn:ngsi-ld:Parking:9"))
    assert not t.covers(entity("urn:ngsi-ld:Building:2"))
    assert not t.covers(entity("urn:other:urn:ngsi-ld:Parking:9"))  # anchored


def test_target_id_pattern_searches_as_idpattern_does() -> None:
    t = Target(id_pattern="Building:1")
    assert t.covers(entity("urn:ngsi-ld:Building:12"))
    assert not t.covers(entity("urn:ngsi-ld:Building:2"))


def test_target_types_need_one_of_the_entity_types() -> None:
    t = Target(types=(PARKING,))
    assert t.covers(entity(types=(BUILDING, PARKING)))
    assert not t.covers(entity(types=(BUILDING,)))


def test_target_kinds_must_all_match() -> None:
    t = Target(ids=("urn:ngsi-ld:Building:1",), types=(PARKING,))
    assert not t.covers(entity("urn:ngsi-ld:Building:1", (BUILDING,)))
    assert t.covers(entity("urn:ngsi-ld:Building:1", (PARKING,)))
    t = Target(types=(BUILDING,), scopes=("/a",))
    assert not t.covers(entity(scope=["/b"]))
    assert not t.covers(entity(types=(PARK,), scope=["/a"]))
    assert t.covers(entity(scope=["/a"]))


@pytest.mark.parametrize(("scopes", "covered"), [
    (["/a"], True), (["/a/b"], True), (["/a/b/c"], True), (["/ab"], False), (["/b"], False),
    (["/b", "/a/x"], True), ([], False), (None, False),
])
def test_target_scope_covers_itself_and_sub_scopes(scopes: list[str] | None,
                                                   covered: bool) -> None:
    doc = entity(scope=scopes)
    if scopes is None:
        doc.pop("scope", None)
    assert Target(scopes=("/a",)).covers(doc) is covered


def test_root_scope_covers_every_scoped_entity() -> None:
    assert Target(scopes=("/",)).covers(entity(scope=["/x/y"]))
    assert not Target(scopes=("/a/b",)).covers(entity(scope=["/a"]))  # not upwards


# -- roles -------------------------------------------------------------------------------

def test_a_role_applies_in_its_tenant_only() -> None:
    reader = with_roles(ALICE, {CITY: {Role.READER}})
    assert decide(reader, R, CITY, entity(), []) == Decision(True, True)
    assert decide(reader, R, OTHER, entity(), []) == Decision(False, False)
    assert decide(reader, W, CITY, entity(), []) == Decision(False, True)


def test_any_tenant_roles_apply_everywhere() -> None:
    writer = with_roles(DEVICE, {ANY_TENANT: {Role.WRITER}})
    for tenant in (CITY, OTHER, ""):
        assert decide(writer, W, tenant, entity(), []).allowed
        assert not decide(writer, A, tenant, entity(), []).allowed


@pytest.mark.parametrize(("role", "allowed"), [
    (Role.READER, {R}), (Role.WRITER, {R, W}), (Role.SUBSCRIBER, {R, S}),
    (Role.TENANT_ADMIN, set(Action)), (Role.PLATFORM_ADMIN, set(Action)),
])
def test_role_actions_on_entities_and_the_tenant(role: Role, allowed: set[Action]) -> None:
    holder = with_roles(BOB, {CITY: {role}})
    for action in Action:
        assert decide(holder, action, CITY, entity(), []).allowed is (action in allowed)
        assert decide(holder, action, CITY, None, []).allowed is (action in allowed)


def test_a_role_sees_every_attribute_whatever_grants_hide() -> None:
    reader = with_roles(ALICE, {CITY: {Role.READER}})
    hiding = [grant("authenticated", R, hidden=(SPEED,))]
    assert decide(reader, R, CITY, entity(), hiding).hidden == frozenset()
    assert view(reader, CITY, hiding) is UNRESTRICTED
    assert shown_attrs(ALICE, hiding, entity()) == {NAME, OWNER_NAME}  # the grant alone


def test_an_anonymous_role_reads() -> None:
    anonymous = with_roles(ANONYMOUS, {CITY: {Role.READER}})
    assert decide(anonymous, R, CITY, entity(), []).allowed
    assert not decide(ANONYMOUS, R, CITY, entity(), []).allowed


# -- ownership and specificAccessPolicy --------------------------------------------------

def test_the_owner_reads_writes_and_administers_its_entity() -> None:
    mine = entity(owner=ALICE.key)
    for action in (R, W, A, OWN):
        assert decide(ALICE, action, CITY, mine, []) == Decision(True, True)
    assert not decide(ALICE, S, CITY, mine, []).allowed
    assert decide(BOB, R, CITY, mine, []) == Decision(False, False)
    assert not decide(ALICE, R, CITY, entity(owner=BOB.key), []).allowed


def test_ownership_is_by_principal_key_not_by_subject_alone() -> None:
    namesake = Principal("oidc", subject="alice", issuer="https://idp.other")
    assert not decide(namesake, R, CITY, entity(owner=ALICE.key), []).allowed
    assert view(namesake, CITY, []).show(entity(owner=ALICE.key)) is None


def test_an_api_key_owns_what_it_created() -> None:
    assert decide(DEVICE, W, CITY, entity(owner=DEVICE.key), []).allowed
    assert not decide(DEVICE, W, CITY, entity(owner="apikey:k2"), []).allowed


def test_ownership_needs_authentication() -> None:
    assert not decide(ANONYMOUS, R, CITY, entity(owner=ANONYMOUS.key), []).allowed
    assert view(ANONYMOUS, CITY, []).show(entity(owner=ANONYMOUS.key)) is None


def test_the_owner_sees_attributes_a_grant_hides() -> None:
    hiding = [grant("subject:alice", R, hidden=(SPEED,))]
    assert decide(ALICE, R, CITY, entity(owner=ALICE.key), hiding).hidden == frozenset()
    assert SPEED in (shown_attrs(ALICE, hiding, entity(owner=ALICE.key)) or ())


def test_auth_read_lets_any_authenticated_caller_read() -> None:
    doc = entity(policy="AUTH_READ")
    assert decide(BOB, R, CITY, doc, []) == Decision(True, True)
    assert decide(DEVICE, R, CITY, doc, []).allowed
    assert decide(BOB, W, CITY, doc, []) == Decision(False, True)
    assert decide(ANONYMOUS, R, CITY, doc, []) == Decision(False, False)
    assert shown_attrs(BOB, [], doc) == set(doc["attrs"])
    assert shown_attrs(ANONYMOUS, [], doc) is None


def test_auth_write_lets_any_authenticated_caller_read_and_write() -> None:
    doc = entity(policy="AUTH_WRITE")
    assert decide(BOB, W, CITY, doc, [], attributes=[SPEED]) == Decision(True, True)
    assert decide(BOB, R, CITY, doc, []).allowed
    assert not decide(BOB, A, CITY, doc, []).allowed
    assert not decide(ANONYMOUS, W, CITY, doc, []).allowed


def test_other_access_policy_values_give_nothing() -> None:
    assert not decide(BOB, R, CITY, entity(policy="OPEN_READ"), []).allowed
    assert shown_attrs(BOB, [], entity(policy="OPEN_READ")) is None


# -- grants ------------------------------------------------------------------------------

def test_a_grant_applies_to_its_assignee_in_its_tenant_on_its_target() -> None:
    g = [grant("subject:alice", R, types=(BUILDING,))]
    assert decide(ALICE, R, CITY, entity(), g) == Decision(True, True)
    assert not decide(ALICE, R, CITY, entity(types=(PARKING,)), g).allowed
    assert not decide(BOB, R, CITY, entity(), g).allowed
    assert not decide(ALICE, R, OTHER, entity(), g).allowed
    assert not decide(ALICE, R, CITY, entity(), [grant("subject:alice", R, tenant=OTHER)]).allowed


def test_grants_by_claim_authenticated_and_public() -> None:
    by_group = [grant("claim:groups=traffic", R)]
    assert decide(ALICE, R, CITY, entity(), by_group).allowed
    assert not decide(BOB, R, CITY, entity(), by_group).allowed
    to_all_users = [grant("authenticated", R)]
    assert decide(DEVICE, R, CITY, entity(), to_all_users).allowed
    assert not decide(ANONYMOUS, R, CITY, entity(), to_all_users).allowed
    open_data = [grant("public", R, types=(PARK,))]
    assert decide(ANONYMOUS, R, CITY, entity(types=(PARK,)), open_data).allowed
    assert not decide(ANONYMOUS, R, CITY, entity(), open_data).allowed


def test_a_grant_gives_its_actions_only() -> None:
    read = [grant("subject:alice", R)]
    assert not decide(ALICE, W, CITY, entity(), read).allowed
    write = [grant("subject:alice", W)]
    assert decide(ALICE, W, CITY, entity(), write) == Decision(True, False)  # write-only
    assert not decide(ALICE, R, CITY, entity(), write).allowed
    sub = [grant("subject:alice", S)]
    assert decide(ALICE, S, CITY, None, sub).allowed
    assert not decide(ALICE, R, CITY, entity(), sub).allowed


def test_own_implies_read_write_and_admin() -> None:
    own = [grant("subject:alice", OWN, ids=("urn:ngsi-ld:Building:1",))]
    for action in (R, W, A, OWN):
        assert decide(ALICE, action, CITY, entity(), own).allowed
    assert not decide(ALICE, S, CITY, entity(), own).allowed
    assert not decide(ALICE, R, CITY, entity("urn:ngsi-ld:Building:2"), own).allowed


def test_admin_on_a_target_allows_granting_on_it_only() -> None:
    admin = [grant("subject:alice", A, types=(BUILDING,))]
    assert decide(ALICE, A, CITY, entity(), admin) == Decision(True, False)
    assert not decide(ALICE, A, CITY, entity(types=(PARK,)), admin).allowed
    assert not decide(ALICE, A, CITY, None, admin).allowed  # not the tenant


# -- attributes --------------------------------------------------------------------------

def test_an_attribute_allow_list_hides_the_others() -> None:
    g = [grant("subject:alice", R, attributes=(NAME,))]
    d = decide(ALICE, R, CITY, entity(), g)
    assert d == Decision(True, True, frozenset({SPEED, OWNER_NAME}))
    assert shown_attrs(ALICE, g, entity()) == {NAME}


def test_a_hidden_list_hides_those() -> None:
    g = [grant("subject:alice", R, hidden=(SPEED, EX + "absent"))]
    assert decide(ALICE, R, CITY, entity(), g).hidden == {SPEED}
    assert shown_attrs(ALICE, g, entity()) == {NAME, OWNER_NAME}


def test_hidden_wins_over_the_allow_list_of_the_same_grant() -> None:
    g = [grant("subject:alice", R, attributes=(NAME, SPEED), hidden=(SPEED,))]
    assert decide(ALICE, R, CITY, entity(), g).hidden == {SPEED, OWNER_NAME}


def test_an_attribute_is_shown_when_any_applicable_grant_shows_it() -> None:
    g = [grant("subject:alice", R, attributes=(NAME,)),
         grant("claim:groups=traffic", R, attributes=(SPEED,))]
    assert decide(ALICE, R, CITY, entity(), g).hidden == {OWNER_NAME}
    full = [grant("public", R, types=(BUILDING,), hidden=(SPEED,)),
            grant("subject:alice", R, ids=("urn:ngsi-ld:Building:1",))]
    assert decide(ALICE, R, CITY, entity(), full).hidden == frozenset()
    assert decide(ALICE, R, CITY, entity("urn:ngsi-ld:Building:2"), full).hidden == {SPEED}


def test_a_grant_that_does_not_apply_hides_nothing() -> None:
    g = [grant("subject:alice", R),
         grant("subject:alice", R, types=(PARK,), hidden=(SPEED,)),
         grant("subject:bob", R, hidden=(SPEED,)),
         grant("subject:alice", W, hidden=(SPEED,))]
    assert decide(ALICE, R, CITY, entity(), g).hidden == frozenset()


def test_view_shows_a_copy_without_hidden_attributes_and_leaves_the_entity_alone() -> None:
    doc = entity(scope=["/a"])
    before = copy.deepcopy(doc)
    shown = view(ALICE, CITY, [grant("subject:alice", R, hidden=(SPEED,))]).show(doc)
    assert shown is not None and shown is not doc
    assert doc == before
    assert shown["attrs"] == {k: v for k, v in before["attrs"].items() if k != SPEED}
    assert {k: v for k, v in shown.items() if k != "attrs"} == {
        k: v for k, v in before.items() if k != "attrs"}


def test_view_returns_the_entity_itself_when_nothing_is_hidden() -> None:
    doc = entity()
    assert view(ALICE, CITY, [grant("subject:alice", R)]).show(doc) is doc
    assert view(ALICE, CITY, [grant("subject:alice", R, hidden=(EX + "absent",))]
                ).show(doc) is doc
    assert view(ALICE, CITY, [grant("subject:alice", R, types=(PARK,))]).show(doc) is None


def test_a_write_touching_an_attribute_hidden_from_writes_is_refused() -> None:
    g = [grant("subject:alice", R), grant("subject:alice", W, hidden=(SPEED,))]
    assert decide(ALICE, W, CITY, entity(), g, attributes=[NAME]) == Decision(
        True, True, frozenset({SPEED}))
    assert decide(ALICE, W, CITY, entity(), g, attributes=[NAME, SPEED]) == Decision(
        False, True, frozenset({SPEED}))
    allow_list = [grant("subject:alice", W, attributes=(NAME,))]
    assert decide(ALICE, W, CITY, entity(), allow_list, attributes=[EX + "new"]) == Decision(
        False, False, frozenset({EX + "new"}))
    assert decide(ALICE, W, CITY, None, [grant("subject:alice", W, hidden=(SPEED,))],
                  attributes=[SPEED]) == Decision(False, False, frozenset({SPEED}))


def test_read_ignores_attributes_it_only_hides() -> None:
    g = [grant("subject:alice", R, hidden=(SPEED,))]
    assert decide(ALICE, R, CITY, entity(), g, attributes=[SPEED]).allowed


# -- visibility and the tenant as a whole ------------------------------------------------

def test_visible_says_whether_reading_the_entity_is_allowed() -> None:
    assert decide(ALICE, W, CITY, entity(), [grant("subject:alice", R)]) == Decision(False, True)
    assert decide(ALICE, W, CITY, entity(), []) == Decision(False, False)
    assert decide(ALICE, A, CITY, entity(), [grant("public", R, types=(BUILDING,))]).visible
    assert not decide(ALICE, A, CITY, entity(), [grant("public", R, types=(PARK,))]).visible


def test_the_tenant_as_a_whole_needs_a_role_or_a_grant_without_an_entity_target() -> None:
    assert decide(ALICE, S, CITY, None, [grant("subject:alice", S)]) == Decision(True, True)
    assert decide(ALICE, S, CITY, None, [grant("subject:alice", S, attributes=(NAME,))]).allowed
    for target in ({"types": (BUILDING,)}, {"ids": ("urn:x",)}, {"id_pattern": "."},
                   {"scopes": ("/",)}):
        assert decide(ALICE, S, CITY, None, [grant("subject:alice", S, **target)]) == Decision(
            False, False)
    assert not decide(ALICE, A, CITY, None, [grant("subject:alice", OWN, types=(BUILDING,))]
                      ).allowed
    admin = with_roles(BOB, {CITY: {Role.TENANT_ADMIN}})
    assert decide(admin, A, CITY, None, []) == Decision(True, True)
    assert not decide(admin, A, OTHER, None, []).allowed


def test_open_allows_everything_and_hides_nothing() -> None:
    for action in Action:
        assert decide(OPEN, action, OTHER, entity(), []) == Decision(True, True)
        assert decide(OPEN, action, CITY, None, [], attributes=[SPEED]) == Decision(True, True)
    assert view(OPEN, CITY, [grant("public", R, hidden=(SPEED,))]) is UNRESTRICTED
    assert UNRESTRICTED.show(entity()) is not None


# -- views -------------------------------------------------------------------------------

def test_role_holders_are_unrestricted_in_their_tenant_only() -> None:
    reader = with_roles(ALICE, {CITY: {Role.SUBSCRIBER}})
    assert view(reader, CITY, []) is UNRESTRICTED
    restricted = view(reader, OTHER, [])
    assert not restricted.unrestricted and restricted.show(entity()) is None
    assert view(with_roles(ALICE, {CITY: {Role.WRITER}}), CITY, [], W) is UNRESTRICTED
    assert view(reader, CITY, [], W) is not UNRESTRICTED


def test_a_grant_of_everything_makes_an_unrestricted_view() -> None:
    assert view(ANONYMOUS, CITY, [grant("public", R)]) is UNRESTRICTED
    assert view(ANONYMOUS, OTHER, [grant("public", R)]).show(entity()) is None
    for narrower in (grant("public", R, hidden=(SPEED,)), grant("public", R, attributes=(NAME,)),
                     grant("public", R, types=(BUILDING,)), grant("public", W)):
        assert not view(ANONYMOUS, CITY, [narrower]).unrestricted


def test_view_honours_ownership_and_access_policy() -> None:
    v = view(ALICE, CITY, [])
    assert v.show(entity(owner=ALICE.key)) is not None
    assert v.show(entity(policy="AUTH_READ")) is not None
    assert v.show(entity()) is None
    assert view(ALICE, CITY, [], W).show(entity(policy="AUTH_READ")) is None
    assert view(ALICE, CITY, [], W).show(entity(policy="AUTH_WRITE")) is not None
    assert view(ALICE, CITY, [], S).show(entity(owner=ALICE.key)) is None


def test_view_types_bound_the_anonymous_caller_to_its_grants_types() -> None:
    grants = [grant("public", R, types=(PARK,)), grant("public", R, types=(PARKING,), ids=("x",)),
              grant("public", W, ids=("y",)), grant("subject:alice", R, ids=("z",))]
    assert view(ANONYMOUS, CITY, grants).types == {PARK, PARKING}
    assert view(ANONYMOUS, OTHER, grants).types == frozenset()  # nothing is visible
    assert view(ANONYMOUS, CITY, [*grants, grant("public", R, ids=("w",))]).types is None
    assert view(ANONYMOUS, CITY, [*grants, grant("public", R)]).types is None


def test_view_types_are_unbounded_for_authenticated_callers() -> None:
    grants = [grant("subject:alice", R, types=(PARK,))]
    assert view(ALICE, CITY, grants).types is None  # may own or be let read any type
    assert view(with_roles(ANONYMOUS, {CITY: {Role.READER}}), CITY, grants).types is None


# -- view and decide agree ---------------------------------------------------------------

PRINCIPALS = [ALICE, BOB, DEVICE, ANONYMOUS, with_roles(BOB, {OTHER: {Role.WRITER}}),
              with_roles(ANONYMOUS, {CITY: {Role.READER}}), with_roles(ALICE, {CITY: {Role.SUBSCRIBER}})]
ASSIGNEES = ["subject:alice", "subject:bob", "subject:k1", "claim:groups=traffic",
             "claim:groups=parks", "authenticated", "public"]
IDS = [f"urn:ngsi-ld:{t}:{n}" for t in ("Building", "Parking") for n in range(3)]
TYPES, SCOPES = [BUILDING, PARKING, PARK], ["/a", "/a/b", "/ab", "/c"]
ATTRS = [NAME, SPEED, OWNER_NAME, EX + "height"]


def random_grant(rng: random.Random, n: int) -> Grant:
    def some(pool: list[str]) -> tuple[str, ...]:
        return tuple(rng.sample(pool, rng.choice([0, 0, 1, 2])))

    return Grant(
        f"g{n}", rng.choice([CITY, CITY, OTHER]), Assignee.parse(rng.choice(ASSIGNEES)),
        frozenset(rng.sample(list(Action), rng.randint(1, 2))),
        Target(ids=some(IDS), id_pattern=rng.choice([None, None, "Parking", ":1$"]),
               types=some(TYPES), scopes=some(SCOPES),
               attributes=rng.choice([None, some(ATTRS)]), hidden=some(ATTRS)))


def random_entity(rng: random.Random) -> JSONObject:
    return entity(rng.choice(IDS), tuple(rng.sample(TYPES, rng.randint(1, 2))),
                  scope=rng.choice([None, rng.sample(SCOPES, 1)]),
                  owner=rng.choice([None, None, ALICE.key, DEVICE.key, ANONYMOUS.key]),
                  policy=rng.choice([None, None, None, "AUTH_READ", "AUTH_WRITE"]),
                  attrs=tuple(rng.sample(ATTRS, rng.randint(0, len(ATTRS)))))


@pytest.mark.parametrize("seed", range(40))
def test_view_show_agrees_with_decide(seed: int) -> None:
    rng = random.Random(seed)
    grants = [random_grant(rng, n) for n in range(rng.randint(0, 6))]
    seen = 0
    for principal in PRINCIPALS:
        for action in (R, W):
            v = view(principal, CITY, grants, action)
            for _ in range(25):
                doc = random_entity(rng)
                before = copy.deepcopy(doc)
                d = decide(principal, action, CITY, doc, grants)
                shown = v.show(doc)
                assert (shown is not None) is d.allowed
                assert doc == before
                if shown is None:
                    continue
                seen += 1
                assert set(shown["attrs"]) == set(doc["attrs"]) - d.hidden
                assert (shown is doc) is (not d.hidden)
                if v.types is not None:
                    assert not v.types.isdisjoint(doc["type"])
                if action is R:
                    assert d.visible
    assert seen or not grants  # the draw exercised showing at all


@pytest.mark.parametrize("seed", range(20))
def test_a_write_is_refused_exactly_for_attributes_hidden_from_writes(seed: int) -> None:
    rng = random.Random(1000 + seed)
    grants = [random_grant(rng, n) for n in range(rng.randint(1, 6))]
    for principal in PRINCIPALS:
        for _ in range(20):
            doc = random_entity(rng)
            touched = rng.sample(sorted(doc["attrs"]), rng.randint(0, len(doc["attrs"])))
            whole = decide(principal, W, CITY, doc, grants)
            part = decide(principal, W, CITY, doc, grants, attributes=touched)
            refused = whole.hidden & set(touched)
            assert part.allowed is (whole.allowed and not refused)
            assert part.visible is decide(principal, R, CITY, doc, grants).allowed
            if whole.allowed and refused:
                assert part.hidden == refused
