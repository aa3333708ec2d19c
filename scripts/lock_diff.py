"""Print which packages moved between two uv.lock files: `python lock_diff.py OLD NEW`."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def versions(path: str) -> dict[str, str]:
    lock = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    return {p["name"]: str(p.get("version", "(dynamic)")) for p in lock.get("package", [])}


def main() -> int:
    old, new = versions(sys.argv[1]), versions(sys.argv[2])
    lines = [
        *(
            f"  {n}: {old[n]} -> {new[n]}"
            for n in sorted(old.keys() & new.keys())
            if old[n] != new[n]
        ),
        *(f"  {n}: added {new[n]}" for n in sorted(new.keys() - old.keys())),
        *(f"  {n}: removed {old[n]}" for n in sorted(old.keys() - new.keys())),
    ]
    print(f"{len(lines)} package(s) moved" + (":" if lines else ""))
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
