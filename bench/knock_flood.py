"""100,000 distinct names knocking while the registry is locked (issue: bounded state under floods): the
database and the memory of the process that records them stay flat. `python -m bench.knock_flood`"""
import os
import tempfile
import time

from store import open_registry

d = tempfile.mkdtemp()
db = os.path.join(d, "r.db")
reg = open_registry(db)
def size():
    return sum(os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s)) / 1e6
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
t0 = time.perf_counter()
for part in range(4):
    batch = [(f"flood-{part}-{i}", "some-password", "c", f"10.{part}.{i // 250 % 250}.{i % 250}", "mqtt")
             for i in range(25_000)]
    for i in range(0, len(batch), 64):
        reg.login_many(batch[i:i + 64])
    st = reg.status()
    print(f"after {25_000 * (part + 1):>7,} names: db+wal {size():6.2f} MB, rss {rss():6.1f} MiB, knocks rows "
          f"{reg.m.Knock.select().count():,}, knocking {st.knocking:,}{'+' if st.knocking_capped else ''}, "
          f"refused_recent {st.refused_recent:,}  ({time.perf_counter() - t0:.1f} s)")
