"""File names made from strings a model controls: a finding's name comes from the model's
``config.json`` (``id2label``), i.e. from whoever published the model, so it may hold ``/``,
``..``, a drive or a NUL. Every file name built from one goes through ``safe_file_stems``."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

# Longest stem kept from a name: with an image's stem and a suffix around it, the file name stays
# well under the 255 bytes most file systems allow.
MAX_STEM = 64
# Anything but ASCII letters, digits, ".", "_" and "-": path separators (both kinds), NUL,
# control characters, shell and Windows-reserved characters, and non-ASCII letters, which
# file systems normalise differently (macOS stores NFD).
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _clean(name: str) -> str:
    # Leading/trailing dots and dashes are stripped: no ".." or "." stem, no hidden file, no
    # trailing dot (Windows drops it), no stem that reads as a command-line option.
    return _UNSAFE.sub("_", name).strip("._-")[:MAX_STEM].rstrip("._-") or "finding"


def safe_file_stems(names: Iterable[str]) -> dict[str, str]:
    """A file-name stem for each name: a single path component of ASCII letters, digits, ``.``,
    ``_`` and ``-`` (spaces and every other character become ``_``), at most ``MAX_STEM``
    characters plus a tag. Names whose stems would coincide, compared without case (macOS and
    Windows file systems ignore it), each get ``-`` and 8 hex digits of their SHA-256, so
    ``"a/b"``, ``"a b"``, ``"A_B"`` and ``"a_b"`` keep four files."""
    names = list(dict.fromkeys(str(n) for n in names))
    stems = {name: _clean(name) for name in names}
    taken = Counter(stem.casefold() for stem in stems.values())
    return {
        name: stem
        if taken[stem.casefold()] == 1
        else f"{stem}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
        for name, stem in stems.items()
    }
