"""`python -m tests.tiny FAMILY [FOLDER]`: try a family end to end offline, without its real weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.tiny import builders


def main(argv: list[str] | None = None) -> int:
    found = builders()
    ap = argparse.ArgumentParser(
        prog="python -m tests.tiny",
        description="Write a tiny random checkpoint of a supported family (same architecture, tokenizer "
        "special tokens and files as the real one; random weights, so the vectors mean nothing).",
    )
    ap.add_argument("family", choices=sorted(found))
    ap.add_argument("folder", type=Path, nargs="?", help="where to write it (default: checkpoints/<real name>-tiny)")
    args = ap.parse_args(argv)
    module = found[args.family]
    folder = (args.folder or Path("checkpoints") / f"{module.REAL}-tiny").resolve()
    from export.build import quiet_libraries

    quiet_libraries()
    module.build(folder)
    print(f"wrote a tiny {module.REAL} to {folder}\nserve it:  make serve MODEL={folder} NAME={folder.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
