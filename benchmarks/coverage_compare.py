"""Which lines covered in one version lost their coverage in another, across moved files.

    python benchmarks/coverage_compare.py OLD_ROOT OLD.json NEW_ROOT NEW.json

Each JSON is coverage.py's report (`pytest --cov=imgsim --cov-report=json:FILE`) of a test run of that
checkout. Files moved between the two (imgsim 0.3.0's flat modules into layer folders), so a line is known
by the function it sits in (its name, not its module), its text and the line before it, stripped (a bare
`continue` or `return None` is known by what precedes it): a covered statement of the old
run is *kept* when the same function holds the same statement in the new run, covered; *lost* when it is there
but not covered; *changed* when no such statement exists any more (rewritten, moved into another function, or
removed). Prints the totals and every lost line.
"""

from __future__ import annotations

import ast
import json
import sys
from collections import Counter
from pathlib import Path


def owners(source: str) -> dict[int, str]:
    """Line number -> name of the innermost function (or class) around it; module level is '<module>'."""
    found: dict[int, tuple[int, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for line in range(node.lineno, node.end_lineno + 1):
                span = node.end_lineno - node.lineno
                if line not in found or span < found[line][0]:
                    found[line] = (span, node.name)
    return {line: name for line, (_, name) in found.items()}


def statements(root: Path, report: Path) -> tuple[Counter, Counter, dict]:
    """(covered keys, all statement keys, key -> where) for one run; a key is (function, line before, line)."""
    files = json.loads(report.read_text())["files"]
    covered, every, where = Counter(), Counter(), {}
    for name, data in files.items():
        path = Path(name) if Path(name).is_absolute() else root / name
        source = path.read_text()
        lines, owner = source.splitlines(), owners(source)
        for number in data["executed_lines"] + data["missing_lines"]:
            before = next((line.strip() for line in reversed(lines[:number - 1]) if line.strip()), "")
            key = (owner.get(number, "<module>"), before, lines[number - 1].strip())
            every[key] += 1
            where.setdefault(key, f"{Path(name).as_posix()}:{number}")
            if number in data["executed_lines"]:
                covered[key] += 1
    return covered, every, where


def main(old_root: str, old_json: str, new_root: str, new_json: str) -> int:
    old_covered, _, old_where = statements(Path(old_root), Path(old_json))
    new_covered, new_every, _ = statements(Path(new_root), Path(new_json))
    kept = lost = changed = 0
    lost_lines = []
    for key, count in old_covered.items():
        there, still = new_every.get(key, 0), new_covered.get(key, 0)
        k = min(count, still)
        kept += k
        missing = min(count - k, there - still)  # the statement is there, not covered
        lost += missing
        changed += count - k - missing
        if missing:
            lost_lines.append((old_where[key], *key))
    total = sum(old_covered.values())
    print(f"old covered statements: {total}; kept covered: {kept}; lost (there, not covered): {lost}; "
          f"changed (not found as they were): {changed}")
    for where, function, _, text in sorted(lost_lines):
        print(f"  lost  {where}  in {function}: {text[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
