#!/usr/bin/env python3
"""Exits 0 if any Rust file below the given folders has a doc comment with a
fenced block rustdoc would run as a doc test (no language, `rust`, or only
rustdoc's attributes such as `no_run`), 1 if none has.

scripts/test.sh runs `cargo test --doc` only then: nextest does not run doc
tests, and compiling every crate's doc tests to run none costs half a minute
of the first run. A false "yes" only costs that time; a false "no" would
skip tests, so anything unclear counts as a doc test.
"""
import pathlib
import re
import sys

RUSTDOC_ATTRIBUTES = {
    "rust", "no_run", "should_panic", "compile_fail", "ignore", "test_harness",
    "edition2015", "edition2018", "edition2021", "edition2024", "standalone_crate",
}
FENCE = re.compile(r"^\s*//[/!]\s?\s*(```+|~~~+)\s*(.*)$")


def runs(info: str) -> bool:
    words = [w for w in re.split(r"[\s,]+", info.strip().strip("{}")) if w]
    return not words or all(w in RUSTDOC_ATTRIBUTES or w.startswith(".") for w in words)


def has_doc_test(path: pathlib.Path) -> bool:
    inside = False
    for line in path.read_text(errors="replace").splitlines():
        fence = FENCE.match(line)
        if not fence:
            continue
        if inside:
            inside = False
        elif runs(fence.group(2)):
            return True
        else:
            inside = True
    return False


folders = [pathlib.Path(f) for f in sys.argv[1:]] or [pathlib.Path(".")]
found = [p for f in folders for p in f.rglob("*.rs") if "target" not in p.parts and has_doc_test(p)]
for path in found:
    print(path)
sys.exit(0 if found else 1)
