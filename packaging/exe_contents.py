"""What a PyInstaller one-file program is made of: its archive's entries by stored size.

    python packaging/exe_contents.py dist/windows/SpotlightSupport.exe [--top N]

Reads the table of contents with PyInstaller's own readers (a Linux PyInstaller reads a
Windows exe just as well), the Python modules inside the PYZ entry included, and prints the
packages (a top-level package, folder or file) and the single entries that take the most
room, in bytes as stored (compressed) in the file. packaging/README.md holds its output for
the current exe; tests/test_wine.py shows it when the exe grows past its size limit.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PyInstaller.archive.readers import CArchiveReader

PKG_ITEM_PYZ = "z"  # PyInstaller's type code for the embedded archive of Python modules


@dataclass(frozen=True)
class Entry:
    name: str  # as in the archive: "numpy.libs\\libscipy_openblas64_.dll", "PYZ:numpy.linalg"
    stored: int  # bytes in the exe


def entries(exe: Path) -> list[Entry]:
    """Every entry of the exe's archive, the PYZ's modules one by one instead of the PYZ."""
    archive = CArchiveReader(str(exe))
    found = []
    for name, (_, stored, _, _, typecode) in archive.toc.items():
        if typecode == PKG_ITEM_PYZ:
            modules = archive.open_embedded_archive(name).toc
            found += [Entry(f"PYZ:{module}", length) for module, (_, _, length) in modules.items()]
        else:
            found.append(Entry(name, stored))
    return found


def package_of(entry: Entry) -> str:
    """numpy for numpy's modules and numpy.libs\\ DLLs; PIL for PIL\\*.pyd; files as named."""
    if entry.name.startswith("PYZ:"):
        return entry.name[4:].split(".")[0]
    first = re.split(r"[\\/]", entry.name)[0]
    if first == entry.name:  # a file at the top: the Python runtime and loose extensions
        return first
    return first.removesuffix(".libs").removesuffix(".dist-info").split("-")[0]


def by_package(found: list[Entry]) -> list[tuple[str, int]]:
    sizes: Counter[str] = Counter()
    for entry in found:
        sizes[package_of(entry)] += entry.stored
    return sizes.most_common()


def report(exe: Path, top: int = 15) -> str:
    found = entries(exe)
    total = exe.stat().st_size
    archived = sum(e.stored for e in found)
    lines = [f"{exe.name}: {total / 1e6:.1f} MB; archive entries {archived / 1e6:.1f} MB, "
             f"bootloader, table of contents and signature {(total - archived) / 1e6:.1f} MB",
             "", "| package | stored MB |", "| --- | ---: |"]
    lines += [f"| {name} | {size / 1e6:.2f} |" for name, size in by_package(found)[:top]]
    lines += ["", "| entry | stored MB |", "| --- | ---: |"]
    largest = sorted(found, key=lambda e: e.stored, reverse=True)[:top]
    lines += [f"| `{e.name}` | {e.stored / 1e6:.2f} |" for e in largest]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exe", type=Path, help="a PyInstaller one-file program")
    parser.add_argument("--top", type=int, default=15, help="rows per table (default 15)")
    args = parser.parse_args(argv)
    try:
        print(report(args.exe, args.top))
    except (OSError, ValueError) as error:  # missing, or not a PyInstaller program
        print(f"exe_contents: {args.exe}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
