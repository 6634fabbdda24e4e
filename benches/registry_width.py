#!/usr/bin/env python3
"""What a narrow registry table would save at site scale: the per-event state
update of the store writer (`last_state`, `last_seen` of another device each
time), replayed in SQLite alone on a copy of a real 10,000-device registry, with
the registry as it is (one wide `devices` table) and with the state columns in a
table of their own, keyed by the device's rowid (`narrow`) or by its text id in a
`WITHOUT ROWID` table (`narrow_by_id`: a key that survives a `VACUUM`, which may
renumber the rowids of `devices`). WAL and `synchronous = full`, as the gateway ships; commits of
`--per-commit` updates, as a full-load burst makes them.

The registry comes from the capacity benchmark (the devices join through the
normal join path):

    cargo bench --bench capacity -- --devices 10000 --rates 1000 --seconds 2 \\
        --keep-state "$PWD/target/footprint/state-10000"
    python3 benches/registry_width.py --state target/footprint/state-10000

A baseline loop (the same parameters bound to a `SELECT` that writes nothing) is
subtracted, so the figures are SQLite's work, not Python's. The loops
alternate in short trials and their medians are compared: on a shared machine
the noise of one long run is of the order of the difference.
Only the Python standard library (its sqlite3 module with `dbstat`).
"""

import argparse
import json
import os
import random
import statistics
import sqlite3
import tempfile
import time

STATE_COLUMNS = ("last_state", "last_seen", "state_sent_ms", "state_due_ms")

# How the narrow table is keyed: its key column, the registry column it copies,
# and the table's options.
NARROW_KEYS = {
    "rowid": ("row INTEGER PRIMARY KEY", "rowid", ""),
    "id": ("id TEXT PRIMARY KEY", "id", " WITHOUT ROWID"),
}


def read_registry(src_db):
    """The registry's table definition, its columns (rowid first) and its rows."""
    src = sqlite3.connect(f"file:{src_db}?mode=ro", uri=True)
    (schema,) = src.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'devices'"
    ).fetchone()
    cur = src.execute("SELECT rowid, * FROM devices")
    columns = [d[0] for d in cur.description]
    rows = cur.fetchall()
    src.close()
    return schema, columns, rows


def copy_registry(registry, path, narrow=None):
    """A database at `path` holding `registry`, with the state columns also in a
    narrow table keyed as `narrow` says (see NARROW_KEYS); returns it and the keys
    an update of each device is addressed by."""
    schema, columns, rows = registry
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode = wal")
    c.execute("PRAGMA synchronous = full")
    c.execute("PRAGMA wal_autocheckpoint = 4000")
    c.execute(schema)
    c.execute("BEGIN")
    marks = ",".join("?" * len(columns))
    c.executemany(
        f"INSERT INTO devices (rowid, {','.join(columns[1:])}) VALUES ({marks})", rows
    )
    if narrow:
        key, source, options = NARROW_KEYS[narrow]
        c.execute(
            f"CREATE TABLE device_live ({key}, last_state TEXT NOT NULL, last_seen TEXT NOT NULL,"
            f" state_sent_ms INTEGER NOT NULL, state_due_ms INTEGER){options}"
        )
        c.execute(
            f"INSERT INTO device_live SELECT {source}, {','.join(STATE_COLUMNS)} FROM devices"
        )
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    by = columns.index("id") if narrow == "id" else 0
    return c, [r[by] for r in rows]


def replay(c, rowids, sql, commits, per_commit, seed):
    rng = random.Random(seed)
    start = time.process_time()
    n = 0
    for _ in range(commits):
        c.execute("BEGIN")
        for _ in range(per_commit):
            row = rowids[n % len(rowids)]
            n += 1
            state = json.dumps(
                {"bench_sent_us": rng.random() * 1e6, "temperature": 20.0 + n % 10}
            )
            c.execute(sql, (state, "2026-01-01T00:00:00.000Z", row))
        c.execute("COMMIT")
    return (time.process_time() - start) / n * 1e6


def pages(c, table):
    return c.execute("SELECT count(*) FROM dbstat WHERE name = ?", (table,)).fetchone()[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--state", required=True, help="a state directory with fieldgate.db")
    p.add_argument("--per-commit", type=int, default=900)
    p.add_argument("--commits", type=int, default=20, help="commits per trial")
    p.add_argument("--trials", type=int, default=30)
    a = p.parse_args()
    registry = read_registry(os.path.join(a.state, "fieldgate.db"))
    # name: (how the state is kept, the table, the per-event update)
    cases = {
        "baseline": (None, "devices", "SELECT ?, ?, ?"),
        "wide": (None, "devices", "UPDATE devices SET last_state = ?, last_seen = ? WHERE rowid = ?"),
        "narrow": (
            "rowid",
            "device_live",
            "UPDATE device_live SET last_state = ?, last_seen = ? WHERE row = ?",
        ),
        "narrow_by_id": (
            "id",
            "device_live",
            "UPDATE device_live SET last_state = ?, last_seen = ? WHERE id = ?",
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        dbs = {}
        for name, (narrow, table, _) in cases.items():
            c, keys = copy_registry(registry, os.path.join(tmp, f"{name}.db"), narrow)
            dbs[name] = (c, keys, pages(c, table))
        results = {name: [] for name in cases}
        # Trials alternate between the cases, so the machine's slow moments fall on
        # all of them alike; the median of each is compared.
        for trial in range(a.trials):
            for name, (_, _, sql) in cases.items():
                c, keys, _ = dbs[name]
                results[name].append(replay(c, keys, sql, a.commits, a.per_commit, seed=trial))
        after = {name: pages(dbs[name][0], cases[name][1]) for name in cases}
        devices = len(dbs["wide"][1])
    median = {name: statistics.median(v) for name, v in results.items()}
    print(
        f"{devices} devices; {a.trials} alternating trials of {a.commits} commits"
        f" of {a.per_commit} updates each; baseline {median['baseline']:.2f} µs subtracted"
    )
    out = {"baseline_trials_us": results["baseline"]}
    wide = median["wide"] - median["baseline"]
    for name in ("wide", "narrow", "narrow_by_id"):
        us = median[name] - median["baseline"]
        out[name] = {
            "pages": [dbs[name][2], after[name]],
            "us_per_update": round(us, 2),
            "trials_us": results[name],
        }
        print(
            f"{name:12} pages {dbs[name][2]:>4} -> {after[name]:<4}"
            f" {us:5.2f} µs of SQLite CPU per update (median),"
            f" {1 - us / wide:4.0%} less than wide"
        )
    with open(os.path.join(a.state, "registry_width.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
