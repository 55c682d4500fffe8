"""Rebuild ``megaspec/data/corpus.txt``, the small English corpus bundled for ``megaspec train``.

The corpus is CPython's own licence text followed by the ``pydoc`` plain-text documentation
of a fixed list of pure-Python standard-library modules, all under the Python Software
Foundation License (see ``NOTICE.md``). It is made on the local machine with no network.

Machine-specific parts of pydoc's output are removed so the file depends only on the Python
version: the ``FILE`` section (an install path), the ``MODULE REFERENCE`` section (a URL that
depends on the ``PYTHONDOCS`` environment variable) and object addresses in reprs
(``<function f at 0x7f...>``). Trailing spaces are dropped.

Run in a fresh interpreter: ``python -m megaspec.data.build_corpus [--output PATH]``.
pydoc lists class attributes, including caches that other code adds at run time (copyreg
sets ``__slotnames__`` on a class the first time one of its instances is copied), so calling
:func:`build_corpus` in a long-running process may add such lines.
"""

from __future__ import annotations

import argparse
import importlib
import pydoc
import re
import sys
import sysconfig
from pathlib import Path

MODULES: tuple[str, ...] = (
    "abc", "argparse", "base64", "bisect", "collections", "contextlib", "copy",
    "dataclasses", "difflib", "fractions", "functools", "getopt", "gettext", "glob",
    "heapq", "hmac", "json", "numbers", "pprint", "queue", "random", "shlex",
    "statistics", "string", "tempfile", "textwrap", "timeit", "tokenize", "uuid",
    "warnings", "weakref",
)  # fmt: skip
"""Modules whose documentation goes into the corpus, in this order."""

DROPPED_SECTIONS = frozenset({"FILE", "MODULE REFERENCE"})
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
DEFAULT_OUTPUT = Path(__file__).with_name("corpus.txt")


class _PlainText(pydoc.TextDoc):
    """pydoc's text renderer without backspace overstriking (what ``pydoc.plaintext`` is;
    typeshed does not declare that instance, so mypy cannot see it)."""

    def bold(self, text: str) -> str:
        return text


def licence_text() -> str:
    """The text of the running CPython's ``LICENSE.txt`` (the PSF License and its history).

    Raises:
        FileNotFoundError: if this Python installation ships no ``LICENSE.txt`` next to its
            standard library (some distributions move it to ``/usr/share/doc``).
    """
    path = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    return path.read_text(encoding="utf-8")


def module_documentation(name: str) -> str:
    """``pydoc``'s plain-text page for module ``name`` without machine-specific parts.

    Raises:
        ImportError: if the module cannot be imported.
    """
    page = pydoc.render_doc(importlib.import_module(name), renderer=_PlainText())
    kept: list[str] = []
    dropping = False
    for line in page.splitlines():
        # A section heading is the only kind of non-blank line pydoc does not indent.
        if line and not line[0].isspace():
            dropping = line.strip() in DROPPED_SECTIONS
        if not dropping:
            kept.append(_ADDRESS.sub("", line).rstrip())
    return "\n".join(kept).strip("\n") + "\n"


def build_corpus(modules: tuple[str, ...] = MODULES) -> str:
    """The whole corpus: the licence text, then one documentation page per module."""
    parts = [licence_text().strip("\n") + "\n"]
    parts.extend(module_documentation(name) for name in modules)
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write the corpus to ``--output`` (default: the bundled ``corpus.txt``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args(argv)
    text = build_corpus()
    # newline="\n" keeps the file byte-identical when built on Windows.
    arguments.output.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {len(text.encode('utf-8')):,} bytes to {arguments.output} "
          f"(Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
