"""Reading label and list files: encoding detected, malformed rows named by file and line.

Every loader reads its CSV and text list files through here, so each gets the same handling of
byte-order marks, UTF-16 and Windows-1252 files, rows with a field too many or too few, quotes
left open, and repeated list entries.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from pathlib import Path

import pandas as pd

from .validation import DataValidationError, Problem, format_problems

logger = logging.getLogger(__name__)

# Checked longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _bomless_encoding(data: bytes, path: Path) -> str | None:
    """'utf-8', 'utf-16-le' / '-be' (NUL in every other byte), or None when only a guess is left."""
    if b"\x00" in data:
        sample = data[:4096]
        half = max(1, len(sample) // 2)
        even, odd = sample[0::2].count(0) / half, sample[1::2].count(0) / half
        if odd > 0.3 and even < 0.05:
            return "utf-16-le"
        if even > 0.3 and odd < 0.05:
            return "utf-16-be"
        raise DataValidationError(
            f"{path} holds NUL bytes: not a text file, or in an encoding not recognised; "
            "save it as UTF-8."
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "utf-8"


def read_text(path: Path) -> str:
    """A label or list file's text: UTF-8/16/32 by byte-order mark, else UTF-8, else (with a
    warning naming the file) Windows-1252 / Latin-1, the ANSI CSV of Windows spreadsheets."""
    data = path.read_bytes()
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    encoding = encoding or _bomless_encoding(data, path)
    if encoding is None:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:  # five bytes cp1252 leaves undefined
            text = data.decode("latin-1")
        logger.warning(
            "%s is not UTF-8; read it as Windows-1252 (Latin-1). If accented names look wrong, "
            "save the file as UTF-8.",
            path,
        )
        return text
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataValidationError(
            f"{path} is not valid {encoding} (byte {err.start}); save it as UTF-8."
        ) from err


def check_csv_rows(text: str, path: Path) -> None:
    """Refuse rows whose field count differs from the header's, and quotes left open.

    pandas reads a first row with one field too many as an index column and shifts every
    cell one column left, and a quote left open swallows the following lines into one cell:
    both silently relabel images, so they are errors naming the line.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[Problem] = []
    width, start = None, 1
    try:
        for row in reader:
            end = reader.line_num
            if any(cell.strip() for cell in row):  # blank lines are skipped, as pandas does
                if width is None:
                    width = len(row)
                elif end > start:
                    problems.append(
                        Problem(
                            f"{path} line {start}",
                            f"a quoted field runs on to line {end}: a quote left open?",
                        )
                    )
                elif len(row) != width:
                    problems.append(
                        Problem(
                            f"{path} line {start}", f"{len(row)} fields, the header has {width}"
                        )
                    )
            start = end + 1
    except csv.Error as err:
        raise DataValidationError(f"{path} line {start}: {err} (a quote left open?)") from err
    if problems:
        raise DataValidationError(format_problems(problems, f"rows in {path}"))


def check_header(text: str, path: Path) -> None:
    """Refuse a header naming a column twice: pandas renames the second ``A`` to ``A.1``, which
    a loader taking every other column as a finding would train as a new class."""
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next((row for row in rows if any(cell.strip() for cell in row)), [])
    names = [cell.strip() for cell in header]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise DataValidationError(
            f"{path}: the header names column(s) {repeated} more than once (header: {header}); "
            "give each column its own name."
        )


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` with the encoding detected, and errors naming the file (and line)
    for a missing, empty, undecodable or malformed file."""
    if not path.is_file():
        raise FileNotFoundError(f"Label file not found: {path}")
    text = read_text(path)
    check_csv_rows(text, path)
    check_header(text, path)
    try:
        frame = pd.read_csv(io.StringIO(text), index_col=False, **kwargs)
    except pd.errors.EmptyDataError as err:
        raise DataValidationError(f"{path} is empty (no header, no rows).") from err
    except pd.errors.ParserError as err:
        raise DataValidationError(f"{path} is not a well-formed CSV: {err}") from err
    if frame.empty:
        raise DataValidationError(f"{path} has a header but no rows.")
    return frame


def read_list(path: Path) -> list[tuple[str, str]]:
    """A list file's non-blank lines as (``"file line N"``, stripped text). A line repeating an
    earlier one is dropped with a warning naming both lines."""
    entries: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    repeats: list[Problem] = []
    for i, line in enumerate(read_text(path).splitlines()):
        value = line.replace("\ufeff", "").strip()  # a mark left by joining files
        if not value:
            continue
        where = f"{path} line {i + 1}"
        if value in first:
            repeats.append(Problem(where, f"duplicate of {first[value]} ({value}); listed once"))
            continue
        first[value] = where
        entries.append((where, value))
    if repeats:
        logger.warning("%s", format_problems(repeats, f"entries in {path}", kind="repeated"))
    return entries
