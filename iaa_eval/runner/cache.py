"""The request cache: sqlite (WAL), keyed by (model fingerprint, request), committed in small
batches.

A request is anything JSON-serialisable (a loglikelihood pair, a prompt + image key + decoding
settings); its key is the sha256 of its canonical JSON. Values are JSON. A rerun answers finished
requests from here, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from iaa_eval.errors import DataError, OutputError

_COLUMNS = ["fingerprint", "key", "value"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    fingerprint TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (fingerprint, key)
)
"""


def request_key(request: Any) -> str:
    """Stable key of a JSON-serialisable request."""
    payload = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class RequestCache:
    """Finished requests of every model in a run.

    ``hits`` counts answers served from disk; ``reused`` counts those among them whose rows were
    already there when this cache was opened (work of an earlier, perhaps interrupted, attempt),
    as opposed to rows this attempt wrote itself (e.g. a second model with the same fingerprint).
    Each :meth:`put_many` call is one transaction, so a crash keeps whole batches or nothing of one.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.hits = 0
        self.reused = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()
        newest = self._db.execute("SELECT COALESCE(MAX(rowid), 0) FROM requests")
        self._opened_at = newest.fetchone()[0]

    def _open(self, attempts: int = 40) -> sqlite3.Connection:
        """Connect, switch to WAL and create the table. Ranks of a torchrun job open the same file
        at once; switching the journal mode needs a moment alone with it, so "locked" is retried."""
        attempt = 0
        while True:
            attempt += 1
            db = sqlite3.connect(self.path, timeout=30)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
                db.commit()
                columns = [row[1] for row in db.execute("PRAGMA table_info(requests)")]
                if columns != _COLUMNS:
                    db.close()
                    raise DataError(
                        f"{self.path}: not an iaa-eval request cache (table 'requests' has "
                        f"columns {', '.join(columns)}; expected {', '.join(_COLUMNS)}); delete "
                        "it or choose another --run-id"
                    )
                return db
            except sqlite3.DatabaseError as exc:
                db.close()
                locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                if not locked or attempt >= attempts:
                    raise DataError(f"{self.path}: request cache unusable ({exc}); delete it to "
                                    "start afresh") from exc
                time.sleep(0.05 * attempt)

    def get_many(self, fingerprint: str, keys: Sequence[str]) -> dict[str, Any]:
        """The cached values among ``keys`` (missing keys are absent from the result)."""
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT key, value, rowid FROM requests "  # noqa: S608
                f"WHERE fingerprint = ? AND key IN ({marks})",
                [fingerprint, *chunk],
            )
            for key, value, rowid in rows:
                found[key] = json.loads(value)
                self.reused += rowid <= self._opened_at
        self.hits += len(found)
        return found

    def put_many(self, fingerprint: str, items: Iterable[tuple[str, Any]]) -> None:
        """Store finished requests in one transaction; callers pass small batches (a chunk of
        requests), so a crash loses at most the batch in flight and never leaves half of one."""
        rows = [(fingerprint, key, json.dumps(value, ensure_ascii=False)) for key, value in items]
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO requests (fingerprint, key, value) "
                                     "VALUES (?, ?, ?)", rows)
        except sqlite3.OperationalError as exc:  # "database or disk is full", a lost mount
            raise OutputError(f"cannot write {self.path} ({exc}); the requests stored before are "
                              "kept (free space and rerun to resume)") from exc

    def count(self, fingerprint: str | None = None) -> int:
        """Rows stored (for one fingerprint, or all)."""
        if fingerprint is None:
            return self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM requests WHERE fingerprint = ?",
                                (fingerprint,)).fetchone()[0]

    def close(self) -> None:
        """Commit and close."""
        self._db.commit()
        self._db.close()
