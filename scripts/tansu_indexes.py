#!/usr/bin/env python3
"""Adds the indexes Tansu 0.6's sqlite storage lacks to a broker's database.

Tansu fetches every record's headers with one query per record, joining the
`header` table on (topition, offset_id), but creates no index for it: each
fetched record scans every header row the broker ever stored, so fetching
slows down as the broker fills (measured: 100 % broker CPU and a saga backlog
of minutes at 200 orders/s after some 20,000 records). Creating the index is
safe while the broker runs (sqlite re-prepares its statements) and is kept in
the database file, so restarts need nothing more.

Usage: tansu_indexes.py PATH/tansu.db [SECONDS]: waits up to SECONDS (default
60) for the broker to have created its schema, then creates what is missing.
"""
import sqlite3
import sys
import time

INDEXES = [
    "CREATE INDEX IF NOT EXISTS mall_header_record ON header (topition, offset_id)",
    "CREATE INDEX IF NOT EXISTS mall_watermark_topition ON watermark (topition)",
]


def main() -> int:
    path = sys.argv[1]
    deadline = time.monotonic() + float(sys.argv[2] if len(sys.argv) > 2 else 60)
    while True:
        try:
            db = sqlite3.connect(path, timeout=30)
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if {"header", "watermark"} <= tables:
                for sql in INDEXES:
                    db.execute(sql)
                db.commit()
                db.close()
                return 0
            db.close()
        except sqlite3.Error as error:
            last = error
        else:
            last = "the broker has not created its tables yet"
        if time.monotonic() > deadline:
            print(f"tansu_indexes: cannot index {path}: {last}", file=sys.stderr)
            return 1
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
