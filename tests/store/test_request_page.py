"""Registry.request_page / request_count: the dashboard's bounded, paged view of the requests (branch perf-tui)."""


def knock(reg, name, password="secret-pw", i=0):
    res = reg.record_attempt(name, password, "cid-" + name, f"10.0.{i}.1:5000", "mqtt")
    assert res.accepted, res.reason
    return res


def fill(reg, n):
    reg.unlock(300, actor="op")
    for i in range(n):
        knock(reg, f"dev-{i:02d}", i=i)


def test_pages_follow_the_order_of_requests(reg):
    fill(reg, 12)
    reg.deny(["dev-03", "dev-07"], actor="op")
    reg.grant(["dev-05"], [], actor="op")
    everything = [r.id for r in reg.requests(include_all=True)]
    assert [reg.requests(include_all=True)[i].status for i in range(9)] == ["pending"] * 9
    pages = []
    for offset in range(0, 14, 5):
        page, total = reg.request_page(5, offset)
        assert total == 12
        pages += [r.id for r in page]
    assert pages == everything
    page, total = reg.request_page(4, 7)  # across the pending/decided boundary
    assert [r.id for r in page] == everything[7:11] and total == 12
    assert reg.request_page(5, 50) == ([], 12)
    assert reg.request_count() == 12


def test_match_is_any_field_ignoring_case_and_counts_exactly(reg):
    fill(reg, 12)
    reg.deny(["dev-03"], actor="op")
    page, total = reg.request_page(100, 0, match="DEV-0")
    assert total == 10 and {r.username for r in page} == {f"dev-{i:02d}" for i in range(10)}
    assert reg.request_count("dev-0") == 10
    page, total = reg.request_page(100, 0, match="denied")
    assert [r.username for r in page] == ["dev-03"] and total == 1
    page, total = reg.request_page(100, 0, match="10.0.11.")  # peer
    assert [r.username for r in page] == ["dev-11"]
    code = reg.request_page(1, 0)[0][0].pairing_code
    assert code in {r.pairing_code for r in reg.request_page(100, 0, match=code.lower())[0]}
    assert reg.request_page(100, 0, match="%") == ([], 0)  # LIKE wildcards are literal
    assert reg.request_page(100, 0, match="_") == ([], 0)


def test_conflict_is_matched_by_its_label(reg):
    fill(reg, 3)
    knock(reg, "dev-01", password="other-password", i=1)  # same name, other password: a conflict
    page, total = reg.request_page(100, 0, match="conflict")
    assert total >= 1 and all(r.conflict for r in page)
    assert all(not r.conflict for r in reg.request_page(100, 0, match="pending")[0])
