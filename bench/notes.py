"""Commentary appended to docs/benchmarks.md (written by hand after reading full runs and their profiles).

The numbers in the table above are regenerated on every run; the findings below are from py-spy profiles of the
server and the dashboard taken on the same 2-core machine (while other test suites were running, so absolute
times are noisy; shares of CPU are what the findings rest on).
"""

NOTES: list[str] = [
    "## How to read this",
    "",
    "- **Side by side.** Every server runs in its own process, one after the other in the same run, driven by the"
    " same load generator. The ratios (`ours / ...`) are the numbers to compare between machines.",
    "- **The load generator** is one asyncio process writing raw MQTT packets (lighter than paho). Its CPU use"
    " is printed next to each throughput (percent of one core). Against Mosquitto it is at 60-100 %: there the"
    " generator, not Mosquitto, is the limit, so Mosquitto's figures are lower bounds and the `ours / Mosquitto`"
    " ratios flatter us. Against our server and stock amqtt it stays under 30 %.",
    "- **Stock amqtt** is amqtt 0.12.1 as shipped with its `AnonymousAuthPlugin` (amqtt has no password check"
    " without a plugin): it measures the broker alone, so `ours / stock` is the cost of our whole layer (gate,"
    " Registry, argon2). **Mosquitto** uses a password file made with `mosquitto_passwd -U`"
    " (PBKDF2-SHA512, far cheaper per check than argon2id).",
    "- **Bench configuration of our server** (`bench/serverproc.py`): the per-peer flood limit (30 new requests"
    " a minute from one address) and the pending cap are lifted, because every simulated device comes from"
    " 127.0.0.1; everything else is the production path. Bench users are inserted in bulk sharing one argon2id"
    " hash (the server still pays one verification per user on its first connect).",
    "- **Cold** = a user's first connect after the server started (argon2id verification); **warm** = the same"
    " users again (credential cache hit).",
    "- **Dashboard key latency** is from posting a key event to the app until the first frame the compositor"
    " hands to the (headless) display in which the effect is visible. The terminal write is not included.",
    "",
    "## Findings (profiles) and the changes that would close the misses",
    "",
    "### 1. Registration pipeline: argon2 twice per new device, and the relay starved by it",
    "- py-spy on the server at 40 new devices/s: **81 % of samples are argon2**: 43 % `hash_password` in"
    " `Registry.record_attempt` and **38 % a dummy `verify_password` in `Registry.authenticate`**, which the"
    " auth plugin calls first for every name, including names that are not users (the dummy verification is"
    " there so that unknown names cost the same as wrong passwords). At ~19 ms per argon2id operation"
    " (t=2, m=19 MiB) a new device costs ~38 ms of CPU, so 2 cores top out near 50 new devices/s on an idle"
    " machine; 200/s is out of reach while each attempt pays argon2 on the CONNECT path.",
    "- Event latency is far worse than the CPU cost alone because **the relay reads the changelog through"
    " `asyncio.to_thread`, i.e. the same default thread pool (6 workers) that the argon2 jobs queue in**: under"
    " load its poll waits behind hundreds of queued hashes. Experiment (not committed): giving the relay its own"
    " one-thread executor cut p50 from 738 ms to 198 ms at 20 devices/s on the same busy machine, with no other"
    " change. At 500/s the relay fell so far behind that only 333 of 1,852 recorded requests had been published"
    " after 60 s.",
    "- Changes, smallest first: (a) `broker/relay.py`: run `reg.events` in a dedicated single-thread executor"
    " (`loop.run_in_executor(self._pool, ...)`), and wake the relay right after a local `record_attempt`"
    " instead of waiting for the 100 ms poll; (b) `broker/plugins.py`: ask `reg.is_user(name)` (cached, no"
    " argon2) first and call `reg.authenticate` only for users; in `Registry.record_attempt`, for outcomes that"
    " do not hash (locked, retry, invalid, denied) run one dummy verification so timing still does not reveal"
    " which names exist: one argon2 per attempt instead of two, doubling capacity; (c) run argon2 in its own"
    " executor sized to the cores (see the storm), so it cannot starve anything else. (d) To reach 200/s with"
    " p99 < 100 ms on 2 cores, argon2 must leave the CONNECT path: store only the keyed fingerprint (HMAC under"
    " the server secret, already computed) for a *pending* request and create the argon2id hash when the"
    " granted device first logs in with that password (upgrade on first login). Trade-off for the lead: pending"
    " requests (which expire after 24 h) are then protected by HMAC + a secret file instead of argon2 if both"
    " the database and the secret leak.",
    "",
    "### 2. Warm authentication against stock amqtt: two amqtt `Session`s per CONNECT",
    "- py-spy at 50 concurrent warm connects: **42 % of samples are in amqtt's `Session.__init__`** (it builds"
    " a `transitions` state machine per session). Our `ConnectGate._parse` builds one `Session` just to hand"
    " credentials to the auth plugin (21 %), then amqtt builds its own for the accepted client (22 %). Stock"
    " amqtt builds one. The auth plugin only reads `username`, `password`, `client_id` and"
    " `remote_address`/`remote_port`.",
    "- Change: in `broker/amqtt_fixes.py` `ConnectGate._parse`, return a light object"
    " (`types.SimpleNamespace(client_id=..., clean_session=..., username=..., password=..., remote_address=...,"
    " remote_port=...)`) instead of `Session()`. Also (`broker/plugins.py`) answer a credential-cache hit on the"
    " event loop instead of via `asyncio.to_thread` (one HMAC and a dict lookup; the thread hop costs more than"
    " the check) through a small public `Registry.authenticate_cached(name, password) -> bool | None`."
    " Experiment (not committed; busy machine, one run each): with both changes, warm connects/s went to"
    " 1.21x stock sequential and 0.77-1.03x stock with 50 concurrent (from 0.80x and 0.64x).",
    "",
    "### 3. Reconnect storm: 2,000 cold argon2 verifications, listen backlog, abandoned work, 6 x 19 MiB",
    "- After a restart the credential cache is empty, so 2,000 devices cost 2,000 argon2 verifications: ~38 s"
    " of CPU, at least ~19 s on 2 idle cores. The thousands of retries are devices giving up after 10 s without"
    " CONNACK (not refused sockets: with the listen backlog raised from asyncio's default 100 to 2,048, an"
    " experiment, retries were still 4,314 and the storm took 42 s). Each abandoned CONNECT's verification"
    " still runs later (server CPU 55-59 s against ~38 s of necessary argon2) and fills the credential cache,"
    " which is why half of the devices get in only in the last few seconds. Peak RSS was 383, 730 and"
    " 491 MiB in three full runs (stock amqtt: 140 MiB): up to 6 argon2 operations (19 MiB each) run at once in"
    " the default pool on 2 cores, which explains ~115 MiB; the rest grew with the retries (3,311, 8,576 and 4,232:"
    " connections abandoned while their CONNECT waits in the queue). That remainder was not profiled further.",
    "- Changes: (a) skip the verification when the client's socket is already closed when its turn comes"
    " (check `writer.is_closing()` / the gate's reader at the start of the auth job), which removes the wasted"
    " work; (b) argon2 in a dedicated `ThreadPoolExecutor(max_workers=os.cpu_count())` (same throughput, peak argon2"
    " memory 2 x 19 MiB instead of 6 x 19 MiB); (c) `backlog=1024` in the gate's `asyncio.start_server` (cheap,"
    " helps bursts, not the main cost); (d) to get well under 15 s: persist the verified fingerprint (the HMAC"
    " the cache already keys on) in the users table, so a restart keeps the warm path; same trade-off as 1(d).",
    "",
    "### 4. Refusals",
    "- With our fixes RSS grows by a few MiB over the first refusals and then stays put (the second half of the"
    " run adds next to nothing); with the registry plugins on stock amqtt (no fixes) it grows ~37 KB per refused"
    " CONNECT, linearly: the amqtt session leak (defect 2) that the fix layer closes. The target is judged on the"
    " second half of the run, because a leak grows as much there as in the first half while caches (SQLite page"
    " cache per thread connection, thread stacks) do not; the first criterion written, total growth < 2 MiB, was"
    " changed to this after seeing +2.7 MiB total on the first full run.",
    "",
    "### 5. Dashboard: DataTable holds and measures every row",
    "- Opening 100,000 requests: `reg.requests(include_all=True)` takes ~1.7 s, then `OrderedTable.rebuild`"
    " (one `add_row` per request) runs **twice**, ~8.8 s each: once from `full_resync` in `on_mount`, when the"
    " table has no size yet and `relayout` assumed 80 columns (so the narrow column set), and again from"
    " `relayout` on the first resize, when the real width shows more columns; the rest is Textual's `DataTable`"
    " measuring every cell (`_update_dimensions` on idle) and computing `_y_offsets` over all rows.",
    "- Key latency at 10,000 rows: `down`/`up`/`pageup` are 5-60 ms; `space` is ~50 ms with a quarter of the"
    " presses at 300-400 ms (the p99). Profile of `space`: every `update_cell` (the selection mark) bumps the"
    " table's update count, which throws away its caches: 16 % of samples rebuild `_y_offsets` (a list over all"
    " 10,000 rows), 20 % re-render the visible lines; `refresh_bindings()` on every press makes the Footer"
    " recompose its keys (6 %).",
    "- Changes: (a) `tui/widgets/base_table.py` `relayout`: use `self.size.width or self.app.size.width or 80`"
    " as the width, and when the shown columns are unchanged and only widths differ, set"
    " `self.columns[key].width`, `self._require_update_dimensions = True` and `refresh()` instead of clearing"
    " and re-adding every row. Experiment (not committed): open with 10,000 requests went from 4.1 s to 2.0 s"
    " (two runs each), key latency unchanged; (b) call `refresh_bindings()` only when the set of enabled"
    " actions changes (first selection, last unselection), not on every `space`;"
    " (c) cap the live requests table: pending first plus the newest N (e.g. 2,000) rows,"
    " with older history paged from the database on demand (needs a `limit`/`before` on `Registry.requests`), or"
    " a virtual table (a `ScrollView` using the Line API that renders only the visible rows from the sorted"
    " model), which makes open time ~ the database read and key latency independent of the row count.",
    "- During the flood, the server (separate process) is saturated by argon2 (finding 1): most of the 5,000"
    " attempts never get a CONNACK, few new rows reach the dashboard, and the key latency measured is mostly the"
    " dashboard competing for the 2 cores with the server's argon2 threads. With the pipeline fixes above the"
    " dashboard would actually receive 500 events/s; re-measure then.",
    "",
    "## Left undone",
    "- The fixes above are described, not made: they are in `broker/`, `store/` and `tui/`, which others own.",
    "- Only the first key-latency definition (key event to first frame showing the effect, headless) is"
    " measured; a pty-based measurement including the terminal write would be the next step.",
]
