"""Soak: a few minutes of writes and notifications while things break, then the books must
balance.

Two broker processes share a PostgreSQL server of the test's own (private_postgres.py);
a third broker runs on SQLite. Writers create and PATCH Lamps on all three, each write
carrying a value that grows per entity, and record which writes were acknowledged.
Subscriptions send to three receivers: a healthy one, one that hangs (holds every request
unanswered) for the first 20 s, one that answers 500 for the first 40 s.
Meanwhile one PostgreSQL node, chosen at random, is SIGKILLed and started again, the SQLite
broker too, and the PostgreSQL server is restarted twice (``-m fast``, then ``-m
immediate``: a crash). Just after the first restart a subscription is created through one
node, and another one, created through the other node matching nothing, is PATCHed to
match everything.

Once the load stops and the outboxes drained (bounded), each test below checks one
invariant: every acknowledged write is stored; every acknowledged write matching a
subscription reached the healthy receiver, the hanging one once it answered again, the
failing one once it recovered unless its retries ran out (then it is a dead letter); no
outbox claim is stuck; dead letters are only the failing receiver's; no request got a 500.

``URBANOS_SOAK_SECONDS`` sets the load's length (default 60), ``URBANOS_SOAK_SEED`` the
random choices (printed, for replaying a run). Deselect with ``-m "not soak"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.broker_process import Broker
from tests.integration.private_postgres import PrivatePostgres, private_postgres
from tests.integration.receiver import Receiver

pytestmark = pytest.mark.soak

DURATION = float(os.environ.get("URBANOS_SOAK_SECONDS", "60"))
SEED = int(os.environ.get("URBANOS_SOAK_SEED", str(random.randrange(1 << 30))))
PAUSE = 0.1  # seconds between two requests of one writer
MAX_OPS = int(3 * DURATION / PAUSE)  # requests of one writer, at most
TAIL = 0.15  # part of DURATION the load goes on for after the last breakage, at least
WRITERS = {"pg": 4, "sqlite": 2}
ENTITIES_PER_WRITER = 20
DRAIN = 30.0  # seconds allowed, after the load and the receivers' outages, to deliver the rest
START = 60.0  # seconds a broker may take to start on a busy machine
GRACE = 1.0  # seconds after a late subscription's creation before writes must match it
#: the dead-letter listing, from the broker's root, read a page of ``DEAD_PAGE`` at a time
DEAD_LETTERS = "admin/dead-letters"
DEAD_PAGE = 1000

HANG_FOR = 20.0  # seconds the hanging receiver holds every request, from the start
FAIL_FOR = 40.0  # seconds the failing receiver answers 500, from the start
#: short retries: 6 attempts of one notification span ~7.5 s of backoff, so the 500s
#: exhaust the notifications of the first ~30 s, while a notification whose every attempt
#: hangs until its 4 s timeout lasts ~31 s, longer than the hang
BROKER_ENV = {
    "URBANOS_NOTIFY_TIMEOUT": "4",
    "URBANOS_NOTIFY_MAX_ATTEMPTS": "6",
    "URBANOS_NOTIFY_BACKOFF": "0.5",
    "URBANOS_NOTIFY_BACKOFF_MAX": "2",
}


@dataclass(frozen=True)
class Ack:
    """A write that got a 2xx: ``value`` is the entity's level after it."""

    cluster: str
    entity_id: str
    value: int
    sent: float  # time.time() when the request left


@dataclass
class Cluster:
    """The brokers sharing one store: two PostgreSQL nodes, or the SQLite broker alone."""

    name: str
    nodes: list[Broker]
    store: str


@dataclass
class Soak:
    clusters: dict[str, Cluster]
    healthy: Receiver
    hanging: Receiver
    failing: Receiver
    acks: list[Ack] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    late: dict[str, float] = field(default_factory=dict)  # cluster -> late subscription's ack
    switched: dict[str, float] = field(default_factory=dict)  # cluster -> the switch's PATCH
    events: list[str] = field(default_factory=list)
    drained: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    #: (cluster, node index) -> entity id -> its level read back (None: not readable)
    levels: dict[tuple[str, int], dict[str, int | None]] = field(default_factory=dict)
    #: the dead-letter listings, page by page
    dead: dict[str, list[httpx.Response]] = field(default_factory=dict)

    def acked(self, cluster: str) -> list[Ack]:
        return [a for a in self.acks if a.cluster == cluster]


def watch(sid: str, uri: str, q: str | None = None) -> dict[str, Any]:
    """A subscription to Lamps, notified in keyValues with their level."""
    body: dict[str, Any] = {
        "id": sid, "type": "Subscription", "entities": [{"type": "Lamp"}],
        "notification": {"format": "keyValues", "attributes": ["level"],
                         "endpoint": {"uri": uri, "accept": "application/json"}}}
    if q is not None:
        body["q"] = q
    return body


def call(node: Broker, method: str, path: str, body: dict[str, Any], ok: set[int],
         statuses: Counter[int]) -> None:
    """One request that must succeed, tried again (at most 20 times, 0.5 s apart) while the
    node fails; every failed answer is counted in ``statuses`` (0: no answer)."""
    for attempt in range(20):
        try:
            status = node.call(method, path, body).status_code
        except httpx.HTTPError:
            status = 0
        if status in ok or (attempt and status == 409 and method == "POST"):
            return  # 409: an attempt that failed on the way back had created it
        statuses[status] += 1
        time.sleep(0.5)
    raise AssertionError(f"{method} {path} failed 20 times: {statuses}")


def subscribe(node: Broker, body: dict[str, Any], statuses: Counter[int]) -> None:
    call(node, "POST", "subscriptions", body, {201}, statuses)


# --- the load -------------------------------------------------------------------------------

async def _writer(soak: Soak, cluster: Cluster, w: int, rng: random.Random,
                  client: httpx.AsyncClient, stop: asyncio.Event) -> None:
    """Creates up to ENTITIES_PER_WRITER Lamps of its own and PATCHes them, through any node
    of its cluster, each write with the next value of its own counter (so values grow per
    entity); records the acknowledged ones. At most MAX_OPS requests."""
    own: list[str] = []
    for n in range(1, MAX_OPS + 1):
        if stop.is_set():
            return
        node = rng.choice(cluster.nodes)
        sent = time.time()
        creating = not own or (len(own) < ENTITIES_PER_WRITER and n % 4 == 1)
        eid = (f"urn:ngsi-ld:Lamp:{cluster.name}-w{w}-{n}" if creating else rng.choice(own))
        try:
            if creating:
                r = await client.post(node.url + "entities", json={
                    "id": eid, "type": "Lamp", "level": {"type": "Property", "value": n}})
            else:
                r = await client.patch(node.url + f"entities/{eid}/attrs", json={
                    "level": {"type": "Property", "value": n}})
        except httpx.HTTPError:
            soak.statuses[(cluster.name, 0)] += 1  # refused or cut: the node is down
        else:
            soak.statuses[(cluster.name, r.status_code)] += 1
            if 200 <= r.status_code < 300:
                soak.acks.append(Ack(cluster.name, eid, n, sent))
                if creating:
                    own.append(eid)
        await asyncio.sleep(PAUSE)


async def _chaos(soak: Soak, pg: PrivatePostgres, rng: random.Random, t0: float) -> None:
    """The breakages, at random points of their own stretch of the run."""

    def log(text: str) -> None:
        soak.events.append(f"{time.time() - t0:6.1f}s {text}")

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, t0 + fraction * DURATION - time.time()))

    pg_nodes, sqlite = soak.clusters["pg"].nodes, soak.clusters["sqlite"].nodes[0]
    await at(rng.uniform(0.3, 0.4))
    victim = rng.choice(pg_nodes)
    victim.kill()
    log(f"SIGKILL PostgreSQL node {pg_nodes.index(victim)}")
    await asyncio.sleep(2)
    await asyncio.to_thread(victim.start, START)
    log("node started again")
    await at(rng.uniform(0.42, 0.5))
    sqlite.kill()
    log("SIGKILL SQLite broker")
    await asyncio.sleep(1)
    await asyncio.to_thread(sqlite.start, START)
    log("SQLite broker started again")
    await at(0.55)
    await asyncio.to_thread(pg.restart, "fast")
    log("PostgreSQL restarted (-m fast)")
    await at(0.62)
    for name, prefix in (("pg", "/pg/late"), ("sqlite", "/sqlite/late")):
        node = rng.choice(soak.clusters[name].nodes)
        body = watch(f"urn:s:{name}:late", soak.healthy.base + prefix)
        failed: Counter[int] = Counter()
        await asyncio.to_thread(subscribe, node, body, failed)
        soak.late[name] = time.time()
        # the switch was created through the last node: changed through the first
        await asyncio.to_thread(call, soak.clusters[name].nodes[0], "PATCH",
                                f"subscriptions/urn:s:{name}:switch", {"q": "level>=0"},
                                {204}, failed)
        soak.switched[name] = time.time()
        soak.statuses.update({(name, status): n for status, n in failed.items()})
    log("late subscriptions created, switches turned on")
    await at(0.75)
    await asyncio.to_thread(pg.restart, "immediate")
    log("PostgreSQL crashed and restarted (-m immediate)")


async def _run_load(soak: Soak, pg: PrivatePostgres, t0: float) -> None:
    """Writers until the end of DURATION, and at least TAIL of it after the last breakage
    (starting a broker takes seconds on a busy machine: the breakages may run late)."""
    rng = random.Random(SEED)
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=5) as client:
        writers = [
            asyncio.create_task(_writer(soak, cluster, w, random.Random(rng.random()),
                                        client, stop))
            for cluster in soak.clusters.values() for w in range(WRITERS[cluster.name])]
        await _chaos(soak, pg, random.Random(rng.random()), t0)
        await asyncio.sleep(max(t0 + DURATION - time.time(), TAIL * DURATION))
        stop.set()
        await asyncio.gather(*writers)


# --- storage state --------------------------------------------------------------------------

def outbox_rows(cluster: Cluster) -> dict[str, tuple[int, int]]:
    """Per outbox table: (rows, rows claimed), read from the store itself."""
    if cluster.name == "pg":
        with psycopg.connect(cluster.store, autocommit=True) as conn:
            return {t: conn.execute(
                f"SELECT count(*), count(claimed_by) FROM urbanos.{t}").fetchone()
                for t in ("outbox_changes", "outbox_deliveries")}
    path = cluster.store.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        changes = conn.execute("SELECT count(*) FROM outbox_changes").fetchone()[0]
        deliveries = conn.execute(
            "SELECT count(*), coalesce(sum(claimed), 0) FROM outbox_deliveries").fetchone()
    return {"outbox_changes": (changes, 0), "outbox_deliveries": tuple(deliveries)}


def claimed_rows(cluster: Cluster) -> list[tuple[Any, ...]]:
    """A few claimed deliveries: id, subscription, attempts, last error."""
    if cluster.name == "pg":
        with psycopg.connect(cluster.store, autocommit=True) as conn:
            return conn.execute(
                """SELECT id, subscription_id, attempts, last_error FROM urbanos.outbox_deliveries
                   WHERE claimed_by IS NOT NULL ORDER BY id LIMIT 5""").fetchall()
    path = cluster.store.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        return conn.execute(
            """SELECT id, subscription_id, attempts, last_error FROM outbox_deliveries
               WHERE claimed = 1 ORDER BY id LIMIT 5""").fetchall()


def _drain(soak: Soak, until: float) -> None:
    """Until both outboxes are empty (then one more second for the last answers) or
    ``until``; records what is left."""
    while True:
        soak.drained = {c.name: outbox_rows(c) for c in soak.clusters.values()}
        if all(rows == 0 for state in soak.drained.values() for rows, _ in state.values()):
            time.sleep(1)
            return
        if time.time() > until:
            return
        time.sleep(1)


def _read_back(soak: Soak) -> None:
    """Every acknowledged entity from every node (a read that fails is tried twice more,
    and its answer counted), and each cluster's dead letters."""
    for name, cluster in soak.clusters.items():
        ids = {a.entity_id for a in soak.acked(name)}
        for i, node in enumerate(cluster.nodes):
            levels = soak.levels[(name, i)] = {}
            for eid in sorted(ids):
                levels[eid] = None
                for _ in range(3):
                    try:
                        r = node.call("GET", f"entities/{eid}?options=keyValues")
                    except httpx.HTTPError:
                        soak.statuses[(name, 0)] += 1
                        continue
                    if r.status_code == 200:
                        levels[eid] = r.json()["level"]
                        break
                    soak.statuses[(name, r.status_code)] += 1
                    if r.status_code < 500:
                        break
                    time.sleep(0.2)
        pages = soak.dead[name] = []
        while not pages or (pages[-1].status_code == 200
                            and len(pages[-1].json()) == DEAD_PAGE):
            pages.append(cluster.nodes[0].client.get(
                f"http://127.0.0.1:{cluster.nodes[0].port}/{DEAD_LETTERS}",
                params={"limit": DEAD_PAGE, "offset": DEAD_PAGE * len(pages)}))


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soak]:
    tmp = tmp_path_factory.mktemp("soak")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(private_postgres())
        pg_url = pg.create_database("urbanos_soak")
        healthy, hanging, failing = (stack.enter_context(Receiver()) for _ in range(3))
        env = {**os.environ, **BROKER_ENV}
        nodes = [Broker(pg_url, tmp / f"pg{i}.log", env=env) for i in range(2)]
        sqlite = Broker(f"sqlite:///{tmp}/soak.db", tmp / "sqlite.log", env=env)
        soak = Soak({"pg": Cluster("pg", nodes, pg_url),
                     "sqlite": Cluster("sqlite", [sqlite], sqlite.store)},
                    healthy, hanging, failing)
        for broker in (*nodes, sqlite):
            stack.callback(lambda b=broker: b.client.close())  # type: ignore[misc]
            stack.callback(broker.stop)
            broker.start(START)
        t0 = time.time()
        hang_end, fail_end = t0 + HANG_FOR, t0 + FAIL_FOR
        for name, cluster in soak.clusters.items():
            first, last = cluster.nodes[0], cluster.nodes[-1]  # PostgreSQL: across nodes
            for node, body in (
                (first, watch(f"urn:s:{name}:all", f"{healthy.base}/{name}/all", "level>=0")),
                (first, watch(f"urn:s:{name}:none", f"{healthy.base}/{name}/none", "level<0")),
                (last, watch(f"urn:s:{name}:switch", f"{healthy.base}/{name}/switch",
                             "level<0")),
                (last, watch(f"urn:s:{name}:hang",
                             f"{hanging.base}/hang-until/{hang_end}/{name}")),
                (last, watch(f"urn:s:{name}:fail",
                             f"{failing.base}/fail-until/{fail_end}/{name}")),
            ):
                subscribe(node, body, Counter())
        asyncio.run(_run_load(soak, pg, t0))
        soak.events.append(f"{time.time() - t0:6.1f}s load stopped")
        _drain(soak, max(time.time(), fail_end) + DRAIN)
        soak.events.append(f"{time.time() - t0:6.1f}s drained: {soak.drained}")
        _read_back(soak)
        print(f"\nsoak seed={SEED} duration={DURATION}s acks="
              f"{Counter(a.cluster for a in soak.acks)} statuses={dict(soak.statuses)}")
        print("\n".join(soak.events))
        yield soak
    print(f"soak took {time.monotonic() - started:.0f}s")


# --- the books ------------------------------------------------------------------------------

def notified(receiver: Receiver, prefix: str) -> set[tuple[str, int]]:
    """(entity id, level) of every notification the receiver answered 2xx under ``prefix``."""
    return {(e["id"], e["level"]) for r in receiver.answered(prefix) for e in r.json()["data"]}


def expected(soak: Soak, cluster: str, since: float = 0.0) -> set[tuple[str, int]]:
    return {(a.entity_id, a.value) for a in soak.acked(cluster) if a.sent >= since}


def missing(want: set[tuple[str, int]], got: set[tuple[str, int]]) -> str:
    lost = sorted(want - got)
    return f"{len(lost)} of {len(want)} not notified, e.g. {lost[:5]}"


def dead_letters(soak: Soak, cluster: str) -> list[dict[str, Any]]:
    """The cluster's dead letters, from its admin listing (every page): objects with a
    ``kind``, ``matching`` (a change that could not be matched) or ``delivery`` (a
    notification abandoned after its last attempt, with its ``subscriptionId``,
    ``attempts``, ``lastError`` and the ``notification`` body that was not delivered)."""
    letters: list[dict[str, Any]] = []
    for r in soak.dead[cluster]:
        assert r.status_code == 200, (
            f"GET {r.url} answered {r.status_code}: without a dead-letter listing the "
            "notifications the failing receiver never got cannot be told from lost ones")
        letters.extend(r.json())
    return letters


def _letter_entities(letter: dict[str, Any]) -> set[tuple[str, int]]:
    return {(e["id"], e["level"]) for e in letter["notification"]["data"]}


def _delivery_letters(soak: Soak, cluster: str, sub: str) -> list[dict[str, Any]]:
    return [letter for letter in dead_letters(soak, cluster)
            if letter["kind"] == "delivery" and letter["subscriptionId"] == sub]


CLUSTERS = ["pg", "sqlite"]


def test_the_run_had_load_and_breakages(soak: Soak) -> None:
    for name in CLUSTERS:
        assert len(soak.acked(name)) > 10 * WRITERS[name], (name, dict(soak.statuses))
    assert len(soak.events) >= 7, soak.events


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_every_acknowledged_write_is_stored(soak: Soak, cluster: str) -> None:
    """On every node, each entity holds at least its last acknowledged value."""
    last: dict[str, int] = {}
    for a in soak.acked(cluster):
        last[a.entity_id] = max(a.value, last.get(a.entity_id, 0))
    wrong = [(i, eid, value, levels[eid])
             for (name, i), levels in soak.levels.items() if name == cluster
             for eid, value in last.items() if (levels[eid] or 0) < value]
    assert wrong == [], (f"{len(wrong)} of {len(last)} entities miss an acknowledged write "
                         f"(node, id, acknowledged, read back): {wrong[:5]}")


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_the_healthy_receiver_got_every_acknowledged_write(soak: Soak, cluster: str) -> None:
    want = expected(soak, cluster)
    got = notified(soak.healthy, f"/{cluster}/all")
    assert want <= got, missing(want, got)
    assert soak.healthy.on(f"/{cluster}/none") == [], "a subscription matching nothing fired"


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_a_late_subscription_gets_every_later_write(soak: Soak, cluster: str) -> None:
    """Created through one node just after a PostgreSQL restart: every node matches it."""
    want = expected(soak, cluster, since=soak.late[cluster] + GRACE)
    got = notified(soak.healthy, f"/{cluster}/late")
    assert want and want <= got, missing(want, got)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_a_subscription_changed_on_one_node_fires_on_every_node(soak: Soak, cluster: str) -> None:
    """Its q matched nothing until a PATCH, after a PostgreSQL restart, through the node
    it was not created on: every later write matches it."""
    want = expected(soak, cluster, since=soak.switched[cluster] + GRACE)
    got = notified(soak.healthy, f"/{cluster}/switch")
    assert want and want <= got, missing(want, got)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_the_hanging_receiver_got_everything_once_it_answered(soak: Soak, cluster: str) -> None:
    want = expected(soak, cluster)
    got = notified(soak.hanging, "/hang-until/")
    got = {g for g in got if g[0].startswith(f"urn:ngsi-ld:Lamp:{cluster}-")}
    assert want <= got, missing(want, got)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_no_outbox_claim_is_stuck(soak: Soak, cluster: str) -> None:
    claimed = {t: c for t, (_, c) in soak.drained[cluster].items() if c}
    assert claimed == {}, (f"claims left after the drain: {claimed}, e.g. (id, subscription, "
                           f"attempts, last error): {claimed_rows(soak.clusters[cluster])}")


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_the_outbox_drained(soak: Soak, cluster: str) -> None:
    left = {t: n for t, (n, _) in soak.drained[cluster].items() if n}
    assert left == {}, f"rows left after the drain: {left}"


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_the_failing_receiver_got_the_rest_or_dead_letters(soak: Soak, cluster: str) -> None:
    want = expected(soak, cluster)
    got = notified(soak.failing, "/fail-until/")
    got = {g for g in got if g[0].startswith(f"urn:ngsi-ld:Lamp:{cluster}-")}
    dead = {e for letter in _delivery_letters(soak, cluster, f"urn:s:{cluster}:fail")
            for e in _letter_entities(letter)}
    assert want <= got | dead, missing(want, got | dead)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_dead_letters_are_only_what_the_failing_receiver_exhausted(
    soak: Soak, cluster: str
) -> None:
    """Every dead letter is a notification of the failing receiver's subscription that
    got its ``URBANOS_NOTIFY_MAX_ATTEMPTS`` answers of 500 and was never acknowledged;
    nothing else (no other subscription, no change left unmatched)."""
    letters = dead_letters(soak, cluster)
    sub = f"urn:s:{cluster}:fail"
    mine = _delivery_letters(soak, cluster, sub)
    assert mine, "the failing receiver answered 500 long enough to exhaust some"
    others = Counter((letter["kind"], letter["subscriptionId"]) for letter in letters
                     if letter not in mine)
    assert not others, f"dead letters other than the failing receiver's: {others}"
    attempts = int(BROKER_ENV["URBANOS_NOTIFY_MAX_ATTEMPTS"])
    wrong = [(letter["id"], letter["attempts"], letter["lastError"]) for letter in mine
             if letter["attempts"] != attempts or "HTTP 500" not in letter["lastError"]]
    assert not wrong, f"dead letters not exhausted by 500s (id, attempts, error): {wrong[:5]}"
    refused: set[tuple[str, int]] = set()  # what the receiver answered 500 to
    for r in soak.failing.on("/fail-until/"):
        if r.status == 500:
            refused |= {(e["id"], e["level"]) for e in r.json()["data"]}
    got = notified(soak.failing, "/fail-until/")
    dead = {e for letter in mine for e in _letter_entities(letter)}
    assert dead <= refused, f"dead letters never refused: {sorted(dead - refused)[:5]}"
    assert not dead & got, f"dead letters that were delivered: {sorted(dead & got)[:5]}"


def test_no_request_was_answered_500(soak: Soak) -> None:
    errors = {k: n for k, n in soak.statuses.items() if k[1] >= 500 and k[1] != 503}
    assert errors == {}, f"(cluster, status): count = {errors}"
