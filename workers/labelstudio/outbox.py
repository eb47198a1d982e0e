"""The persistent outbox and ledger of the review loop (one SQLite file, ``runtime.outbox_path()``).

``items``: one row per review item, keyed by its idempotency key (query image hash + model
version). A row is ``pending`` until Label Studio has the task, then ``delivered`` with the
task id; the primary key is what makes "never two tasks" hold across retries and processes.
Delivery is claimed with a short lease so two workers never deliver the same item at once.

``tiles``: aerial review tiles sent to Label Studio (their key and task id), so that the status
can count those still awaiting an annotation.
``gone``: tasks a sync found deleted in Label Studio (by an admin, or with their project); they
no longer count as awaiting an annotation.
``labels``: annotations already written to ``data/labels/`` or ``data/aerial_labels/`` (annotation
id, unique across Label Studio, + its update time). ``rejected``: annotations a sync refused
(unknown class, no class, malformed), with why.
``counters``: ``labels_since_retrain`` (segment reviews), ``aerial_labels_since_retrain`` (new or
edited aerial tile labels, :mod:`workers.labelstudio.aerial`). ``settings``: the model version
the review project orders by (set by the newest item).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinoseg import runtime

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY, result_id TEXT NOT NULL, payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', task_id INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, claimed_until REAL NOT NULL DEFAULT 0, created REAL NOT NULL,
    delivered REAL);
CREATE TABLE IF NOT EXISTS labels (
    annotation_id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL, updated_at TEXT NOT NULL,
    stem TEXT NOT NULL, synced REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    key TEXT PRIMARY KEY, task_id INTEGER NOT NULL, sent REAL NOT NULL);
CREATE TABLE IF NOT EXISTS gone (task_id INTEGER PRIMARY KEY, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY, value TEXT NOT NULL, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
    annotation_id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL, updated_at TEXT NOT NULL,
    reason TEXT NOT NULL, seen REAL NOT NULL);
"""
LEASE_SECONDS = 120.0


@dataclass
class Item:
    """One review item (``payload`` is the Label Studio task JSON)."""

    key: str
    result_id: str
    payload: dict[str, Any]
    state: str
    task_id: int | None
    attempts: int
    last_error: str | None
    created: float = 0.0


class Outbox:
    """The outbox database; every method is one short transaction (safe across processes).

    The database is opened (and its schema made) once, at the first use, and the connection is
    kept for the life of the process; a forked child opens its own.
    """

    def __init__(self, path: Path | None = None):
        self.path = path or runtime.outbox_path()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            runtime.ensure(self.path.parent)
            db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")  # persistent; readers never block the writer
            db.executescript(_SCHEMA)
            self._db, self._pid = db, os.getpid()
        return self._db

    def close(self) -> None:
        """Close the connection (the next call opens it again)."""
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def add(self, key: str, result_id: str, payload: dict[str, Any]) -> tuple[Item, bool]:
        """Insert a pending item unless the key exists; returns (the item, whether it is new)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO items (key, result_id, payload, created) VALUES (?,?,?,?)",
                (key, result_id, json.dumps(payload), time.time()),
            )
            new = cur.rowcount == 1
        item = self.get(key)
        if item is None:  # rows are never deleted
            raise RuntimeError(f"outbox item {key} vanished")
        return item, new

    def get(self, key: str) -> Item | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT key, result_id, payload, state, task_id, attempts, last_error, created "
                "FROM items WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return Item(row[0], row[1], json.loads(row[2]), *row[3:])

    def claim(self, key: str, lease: float = LEASE_SECONDS) -> bool:
        """Take the delivery of a pending item for ``lease`` seconds (False: delivered/taken)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE items SET claimed_until = ?, attempts = attempts + 1 "
                "WHERE key = ? AND state = 'pending' AND claimed_until < ?",
                (now + lease, key, now),
            )
            return cur.rowcount == 1

    def delivered(self, key: str, task_id: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE items SET state = 'delivered', task_id = ?, delivered = ?, "
                "last_error = NULL, claimed_until = 0 WHERE key = ?",
                (task_id, time.time(), key),
            )

    def failed(self, key: str, error: str) -> None:
        """Release the claim and remember why the delivery failed (the item stays pending)."""
        with self._tx() as db:
            db.execute(
                "UPDATE items SET last_error = ?, claimed_until = 0 WHERE key = ?",
                (error[:500], key),
            )

    def pending(self, limit: int = 100) -> list[str]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT key FROM items WHERE state = 'pending' ORDER BY created LIMIT ?", (limit,)
            ).fetchall()
        return [r[0] for r in rows]

    def depth(self) -> int:
        """Items waiting for Label Studio."""
        with self._tx() as db:
            return int(db.execute("SELECT COUNT(*) FROM items WHERE state='pending'").fetchone()[0])

    def awaiting_annotation(self) -> int:
        """Delivered items whose task has no synced annotation yet (and still exists)."""
        return len(self.awaiting_tasks("items"))

    def awaiting_tasks(self, table: str) -> set[int]:
        """Task ids of ``items`` (segment reviews, delivered) or ``tiles`` (aerial review) that
        have no synced annotation and were not found deleted."""
        if table not in ("items", "tiles"):
            raise ValueError(f"no task table {table!r}")
        delivered = " AND state = 'delivered'" if table == "items" else ""
        with self._tx() as db:
            rows = db.execute(
                f"SELECT task_id FROM {table} WHERE task_id IS NOT NULL{delivered} "
                "AND task_id NOT IN (SELECT task_id FROM labels) "
                "AND task_id NOT IN (SELECT task_id FROM gone)"
            ).fetchall()
        return {int(r[0]) for r in rows}

    def tasks_gone(self, task_ids: Iterable[int]) -> None:
        """Remember tasks Label Studio no longer has (not counted as awaiting from now on)."""
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO gone VALUES (?, ?)",
                           [(int(t), time.time()) for t in task_ids])  # fmt: skip

    def tiles_sent(self, sent: Iterable[tuple[str, int]]) -> None:
        """Remember aerial review tiles as ``(key, task id)`` (a tile sent again: one row)."""
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO tiles VALUES (?, ?, ?)",
                           [(key, task_id, time.time()) for key, task_id in sent])  # fmt: skip

    def tiles_awaiting(self) -> int:
        """Aerial review tiles whose task has no synced annotation yet (and still exists)."""
        return len(self.awaiting_tasks("tiles"))

    def label_synced(self, annotation_id: int, updated_at: str) -> bool:
        """Whether this version of the annotation was written already."""
        return self.synced_stem(annotation_id, updated_at) is not None

    def synced_stem(self, annotation_id: int, updated_at: str) -> str | None:
        """The stem this version of the annotation was written as (None: not written)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT updated_at, stem FROM labels WHERE annotation_id = ?", (annotation_id,)
            ).fetchone()
        return str(row[1]) if row is not None and row[0] == updated_at else None

    def record_label(self, annotation_id: int, task_id: int, updated_at: str, stem: str,
                     counter: str | None = "labels_since_retrain") -> None:  # fmt: skip
        """Remember a written annotation and count it on ``counter`` toward the next retrain
        (None: not counted, e.g. an aerial label rewritten unchanged)."""
        with self._tx() as db:
            # (a task with a written label: its earlier refused annotations are moot)
            db.execute("DELETE FROM rejected WHERE annotation_id = ? OR task_id = ?",
                       (annotation_id, task_id))  # fmt: skip
            db.execute(
                "INSERT OR REPLACE INTO labels VALUES (?,?,?,?,?)",
                (annotation_id, task_id, updated_at, stem, time.time()),
            )
            if counter is not None:
                db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) "
                           "DO UPDATE SET value = value + 1", (counter,))  # fmt: skip

    def take_retrain(self, after: int, counter: str = "labels_since_retrain") -> bool:
        """Reset ``counter`` and return True when it reached ``after`` (``after <= 0``: never,
        the counter keeps counting)."""
        if after <= 0:
            return False
        with self._tx() as db:
            row = db.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()
            if row is None or row[0] < after:
                return False
            db.execute("UPDATE counters SET value = 0 WHERE name = ?", (counter,))
            return True

    def newest_version(self, version: str, created: float) -> bool:
        """Record ``version`` as the project's model version unless an item created later set
        another; True when ``version`` is the one to order by."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO settings VALUES ('model_version', ?, ?) ON CONFLICT(name) DO UPDATE "
                "SET value = excluded.value, since = excluded.since WHERE excluded.since >= since",
                (version, created),
            )
            row = db.execute("SELECT value FROM settings WHERE name = 'model_version'").fetchone()
        return bool(row and row[0] == version)

    def reject(self, annotation_id: int, task_id: int, updated_at: str, reason: str) -> None:
        """Remember an annotation the sync refused (the newest reason per annotation; a task's
        older refused annotations, which the sync no longer reads, are dropped)."""
        with self._tx() as db:
            if task_id > 0:
                db.execute("DELETE FROM rejected WHERE task_id = ? AND annotation_id != ?",
                           (task_id, annotation_id))  # fmt: skip
            db.execute("INSERT OR REPLACE INTO rejected VALUES (?,?,?,?,?)",
                       (annotation_id, task_id, updated_at, reason[:500], time.time()))

    def refused_ids(self, limit: int = 50) -> list[int]:
        """Annotation ids of the refused annotations, the longest known first."""
        with self._tx() as db:
            rows = db.execute("SELECT annotation_id FROM rejected ORDER BY seen LIMIT ?",
                              (limit,)).fetchall()  # fmt: skip
        return [int(r[0]) for r in rows]

    def forget_refusal(self, annotation_id: int) -> None:
        """Drop a refusal (its annotation no longer exists)."""
        with self._tx() as db:
            db.execute("DELETE FROM rejected WHERE annotation_id = ?", (annotation_id,))

    def rejections(self, limit: int = 5) -> tuple[int, list[str]]:
        """(annotations currently refused, the latest ``limit`` reasons)."""
        with self._tx() as db:
            count = int(db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0])
            rows = db.execute("SELECT task_id, reason FROM rejected ORDER BY seen DESC LIMIT ?",
                              (limit,)).fetchall()  # fmt: skip
        return count, [f"task {t}: {r}" for t, r in rows]
