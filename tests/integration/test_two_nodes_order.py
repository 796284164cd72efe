"""Two broker processes on one PostgreSQL database, one subscription, one entity updated
1,000 times through both nodes in turn: the receiver gets the notifications in the order
of the updates, each once (the order the README and docs/architecture.md promise).
"""

from __future__ import annotations

from tests.integration import test_two_nodes
from tests.integration.broker_process import Broker, lamp, subscription
from tests.integration.receiver import Receiver

UPDATES = 1000
#: two broker processes on a fresh database, as in test_two_nodes
nodes = test_two_nodes.nodes


def test_a_subscriptions_notifications_arrive_in_order_across_nodes(
    nodes: tuple[Broker, Broker],
) -> None:
    a, b = nodes
    with Receiver() as receiver:
        r = a.call("POST", "subscriptions", subscription("urn:s:o", f"{receiver.base}/o"))
        assert r.status_code == 201, r.text
        assert b.call("GET", "subscriptions/urn:s:o").status_code == 200
        assert b.call("POST", "entities", lamp(0)).status_code == 201
        for n in range(1, UPDATES + 1):
            node = a if n % 2 else b
            r = node.call("PATCH", "entities/urn:ngsi-ld:Lamp:0/attrs",
                          {"level": {"type": "Property", "value": n}})
            assert r.status_code == 204, r.text
        got = receiver.wait("/o", UPDATES + 1, timeout=120)
        levels = [r.json()["data"][0]["level"]["value"] for r in got]
        assert levels == list(range(UPDATES + 1))
