"""The requests table's live rows and the database's pages agree on what a filter matches and on the order.

The dashboard shows a window of ``Registry.request_page`` (SQL) and then adds the requests that events bring
(``RequestsTable.matches`` and ``order_key``, Python). If the two disagreed, a filter would drop live rows the
page keeps, or pages would come back empty while live rows are added (issue 17)."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import open_registry
from tui.widgets.requests_table import RequestsTable

NOW = 1_800_000_000.0
TEXT = st.text(alphabet=string.ascii_letters + string.digits + ".:-_% éÉ", min_size=0, max_size=8)

REQUEST = st.fixed_dictionaries({
    "username": st.text(alphabet=string.ascii_letters + "-é", min_size=3, max_size=8),
    "client_id": st.none() | TEXT,
    "peer": st.none() | st.sampled_from(["10.0.0.1:5000", "[::1]:7", "192.168.1.20:1883"]),
    "source": st.sampled_from(["mqtt", "http"]),
    "pairing_code": st.none() | st.text(alphabet="ABCDEFGH23456789", min_size=6, max_size=6),
    "status": st.sampled_from(["pending", "granted", "denied", "expired"]),
    "conflict": st.booleans(),
    "rekey": st.booleans(),
    "rotation": st.booleans(),
    "decided_by": st.none() | st.sampled_from(["op", "admin", "rule:fleet", "rule:Sensors", "registry"]),
})

# what an operator types: a word of a label, part of a field, or anything
FILTER = st.sampled_from(["pending", "conflict", "re-key", "rotation", "granted", "by rule", "rule", "rule:",
                          "rule:fleet",
                          "denied", "expired", "mqtt", "HTTP", "10.0", "op", "admin", "registry", "%", "_", "by",
                          "e", "É"]) | TEXT


@pytest.fixture(scope="module")
def module_reg(tmp_path_factory):
    registry = open_registry(str(tmp_path_factory.mktemp("filter") / "registry.db"), clock=lambda: NOW)
    yield registry
    registry.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(REQUEST, max_size=12), text=FILTER)
def test_page_and_live_rows_agree(module_reg, requests, text):
    reg = module_reg
    R = reg.m.Request
    R.delete().execute()
    for i, fields in enumerate(requests):
        R.insert(verifier="0" * 64, first_seen=NOW - 100 + i, last_seen=NOW - 10, attempts=1, **fields).execute()
    page, total = reg.request_page(100, 0, match=text, expire=False)
    everything, _ = reg.request_page(100, 0, expire=False)

    table = RequestsTable()  # only its predicate and order are used: no app is running
    table.filter = text
    live = sorted((r for r in everything if table.matches(r)), key=table.order_key)
    assert [r.id for r in page] == [r.id for r in live]
    assert total == len(live)
    # and without a filter, the page's order is the table's
    assert [r.id for r in everything] == [r.id for r in sorted(everything, key=table.order_key)]
