"""The results file of ``hf-cxr-mae predict`` in one place: its columns, what counts as a file
predict wrote, writing it a batch at a time (a full disk or a crash leaves whole rows only),
resuming it (done rows, failed rows, a row cut short) and reading it back for ``compare``.

Predict writes a CSV headed ``path, error, <one column per finding>, flagged`` or a JSON lines
file whose every line holds a ``path`` and either ``probabilities`` or an ``error``. A non-empty
file counts as predict's when it has that shape and ``<output>.model`` (``output_safety``) lies
beside it; anything else is refused, untouched.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .output_safety import append_whole, output_error, record_difference

if TYPE_CHECKING:
    import pandas as pd

    from .predict import Prediction

logger = logging.getLogger(__name__)

# Columns that may hold the image of a row in a prediction or labels CSV, in order of preference.
ID_COLUMNS = ("image_id", "path", "image", "Image Index", "Path", "file", "filename")
# Columns of `predict`'s output that are not probabilities.
NOT_PROBABILITIES = ("error", "flagged", "row", "row_id")


def _header(names: Sequence[str]) -> list[str]:
    return ["path", "error", *names, "flagged"]


def _shape(output: Path) -> tuple[bool, list[str] | None, str]:
    """(has predict's shape, the findings it holds or None if unknown, a description)."""
    try:
        if output.suffix != ".jsonl":
            with output.open(newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            ok = header[:2] == ["path", "error"] and header[-1:] == ["flagged"]
            return ok, header[2:-1], f"columns {', '.join(header[:6])}..."
        text = output.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, csv.Error) as err:
        return False, None, f"not text ({err})"
    lines = text.split("\n")[:-1]  # the piece after the last newline is a row cut short
    findings = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            return False, None, f"line {number} is not JSON"
        probabilities = row.get("probabilities") if isinstance(row, dict) else None
        if not (
            isinstance(row, dict)
            and isinstance(row.get("path"), str)
            and (isinstance(probabilities, dict) or row.get("error"))
        ):
            return False, None, f"line {number} is not a prediction ({line[:60]!r})"
        if isinstance(probabilities, dict) and findings is None:
            findings = list(probabilities)
        elif isinstance(probabilities, dict) and list(probabilities) != findings:
            return True, list(probabilities), f"findings {', '.join(list(probabilities)[:6])}"
    return True, findings, f"findings {', '.join((findings or [])[:6])}"


def check_resumable(output: Path, names: Sequence[str], identity: str | None) -> None:
    """Refuse (ValueError), before anything is changed, an existing non-empty ``output`` that
    predict did not write (see the module's docstring) or, unless ``identity`` is None (a fresh
    run that replaces the file), one whose findings or model (``<output>.model``) are not
    ``names`` and ``identity``."""
    output = Path(output)
    if not output.is_file() or output.stat().st_size == 0:
        return
    stamp = Path(f"{output}.model")
    ok, findings, found = _shape(output)
    if not ok:
        raise ValueError(
            f"{output} was not written by hf-cxr-mae predict ({found}; predict writes "
            f"{', '.join(_header(names)[:6])}...): it is left untouched; pass another --output."
        )
    if not stamp.is_file():
        raise ValueError(
            f"{output} has no {stamp.name} beside it, the record of the model that wrote it, "
            f"so it cannot be resumed safely (it may hold another model's rows): pass another "
            f"--output, or delete {output} to predict every image again."
        )
    if identity is None:
        return
    if findings is not None and findings != list(names):
        raise ValueError(
            f"{output} holds results with other columns ({found}); "
            "pass another --output or delete it."
        )
    if difference := record_difference(stamp.read_text(encoding="utf-8"), identity):
        raise ValueError(
            f"{output} holds {difference}; pass another --output, or delete {output} and {stamp}."
        )


def done_paths(output: Path) -> set[str]:
    """The files a previous run already predicted into ``output`` (CSV or JSON lines): skipped
    on rerun. Rows that failed (an ``error``) are not done: see ``drop_failed_rows``."""
    return {row["path"] for row in _rows(output) if row.get("path") and not row.get("error")}


def _rows(output: Path) -> list[dict]:
    """The rows of a results file (JSON lines: a line cut short by a crash is left out)."""
    if not output.is_file():
        return []
    if output.suffix == ".jsonl":
        rows = []
        for line in output.read_text(encoding="utf-8-sig").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut short by a crash: predicted again
                continue
        return rows
    with output.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def drop_failed_rows(output: Path) -> int:
    """Remove the rows of images that could not be read from ``output`` (rewritten through a
    temporary file, so a crash or a full disk leaves the old file), so that a rerun tries them
    again without leaving two rows for one image; returns how many were removed."""
    if not output.is_file():
        return 0
    temporary = output.with_name(output.name + ".rewrite")
    try:
        if output.suffix == ".jsonl":
            with output.open("rb") as f:
                lines = f.read().splitlines(keepends=True)
            keep = [line for line in lines if not _is_error_line(line)]
            removed = len(lines) - len(keep)
            if removed:
                temporary.write_bytes(b"".join(keep))
        else:  # csv.reader: an error message may span lines inside its quotes
            with output.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
            keep = rows[:1] + [row for row in rows[1:] if len(row) < 2 or not row[1]]
            removed = len(rows) - len(keep)
            if removed:
                with temporary.open("w", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerows(keep)
        if removed:
            os.replace(temporary, output)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise output_error(output, err) from err
    if removed:
        logger.warning("%s: %d images that failed before are tried again.", output, removed)
    return removed


def _is_error_line(line: bytes) -> bool:
    try:
        return bool(json.loads(line).get("error"))
    except (ValueError, AttributeError):
        return False


def drop_partial_row(output: Path) -> None:
    """Cut a last line that lacks its newline (a run killed while writing it), so that its image
    is predicted again and the next row does not continue that line."""
    if not output.is_file():
        return
    data = output.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    logger.warning(
        "%s ends in a row cut short (%r): dropped, its image is predicted again.",
        output, data[keep:][:80].decode("utf-8", "replace"),
    )  # fmt: skip
    with output.open("r+b") as f:
        f.truncate(keep)


class ResultWriter:
    """Appends each batch's rows to a CSV (``path``, ``error``, one column per finding,
    ``flagged``: the findings at or above their operating point, ``;``-separated) or a JSON lines
    file (``.jsonl``), on disk (fsync) per batch, so an interrupted run keeps what it predicted.
    A batch is written whole or not at all: a write that fails (full disk) is cut back to the
    rows before it and raised as ``OutputError``."""

    def __init__(self, output: Path, names: Sequence[str]) -> None:
        self.output, self.names = Path(output), list(names)
        self.jsonl = self.output.suffix == ".jsonl"
        fresh = not self.output.is_file() or self.output.stat().st_size == 0
        if not fresh and not self.jsonl:
            with self.output.open(newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            if header != self._header():
                raise ValueError(
                    f"{self.output} holds results with other columns ({', '.join(header[:6])}...); "
                    "pass another --output or delete it."
                )
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
            self.fd = os.open(self.output, flags, 0o666)
        except OSError as err:
            raise output_error(self.output, err) from err
        if fresh and not self.jsonl:
            append_whole(self.fd, self._csv([self._header()]), self.output)

    def _header(self) -> list[str]:
        return _header(self.names)

    @staticmethod
    def _csv(rows: list[list[str]]) -> bytes:
        text = io.StringIO(newline="")
        csv.writer(text).writerows(rows)
        return text.getvalue().encode("utf-8")

    def write(self, results: Sequence[Prediction], failures: Sequence[tuple[str, str]]) -> None:
        lines: list[str] = []
        rows: list[list[str]] = []
        for result in results:
            if not all(map(math.isfinite, result.probabilities.values())):
                raise ValueError(f"{result.path}: {result.probabilities} are not probabilities.")
            flagged = [n for n, f in (result.flagged or {}).items() if f]
            if self.jsonl:
                row = {"path": result.path, "probabilities": result.probabilities}
                if result.flagged is not None:
                    row["flagged"] = flagged
                lines.append(json.dumps(row, allow_nan=False) + "\n")
            else:
                # 9 significant digits give a float32 back exactly: fixed decimals turned a
                # confident model's small probabilities into tied zeros (another AUROC).
                values = [f"{result.probabilities[n]:.9g}" for n in self.names]
                marks = ";".join(flagged) if result.flagged is not None else ""
                rows.append([result.path, "", *values, marks])
        for path, error in failures:
            if self.jsonl:
                lines.append(json.dumps({"path": path, "error": error}) + "\n")
            else:
                rows.append([path, error, *[""] * len(self.names), ""])
        data = "".join(lines).encode("utf-8") if self.jsonl else self._csv(rows)
        append_whole(self.fd, data, self.output)

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Predictions:
    """Probabilities of one model: an id per image, one column per finding, where they came from."""

    ids: list[str]
    names: list[str]
    probabilities: np.ndarray  # (n, k)
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def image_column(columns: Sequence[str], path: Path) -> str:
    """The first of ``ID_COLUMNS`` among ``columns`` (of the CSV ``path``), else ValueError."""
    for name in ID_COLUMNS:
        if name in columns:
            return name
    raise ValueError(
        f"{path} has no image column: expected one of {list(ID_COLUMNS)}, got {list(columns)}."
    )


def check_unique(ids: Sequence[str], source: str) -> None:
    """Refuse (ValueError) an image listed twice in ``source``, naming it and its row."""
    seen: set[str] = set()
    for i, image in enumerate(ids):
        if image in seen:
            raise ValueError(f"{source}: image {image!r} appears twice (row {i + 1}).")
        seen.add(image)


def _json_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of ``predict --json`` (one object with a ``predictions`` list) or of predict's
    ``--output *.jsonl`` (an object per line)."""
    text = path.read_text()
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {number} is not JSON: {err}") from err
        return rows
    payload = json.loads(text)
    rows = payload.get("predictions") if isinstance(payload, dict) else None
    if rows is None:
        raise ValueError(f"{path} holds no 'predictions' list (as `predict --json` writes).")
    return rows


def check_is_file(path: Path, what: str) -> None:
    """``what`` must be a file: a folder or a missing path is named as such."""
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; name the CSV file in it.")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist.")


def read_csv(path: Path) -> pd.DataFrame:
    """``pd.read_csv``, with an empty file (pandas' bare "No columns to parse from file") named."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path} is empty: no header, no rows.") from err


def read_predictions(path: str | Path) -> Predictions:
    """A prediction file as ``hf-cxr-mae predict`` writes it: CSV (an image column of
    ``ID_COLUMNS``, one probability column per finding; ``error`` and ``flagged`` ignored),
    JSON lines (``--output *.jsonl``) or the ``--json`` printout. Images that failed to
    read (an ``error``) are left out with a warning: pairing then refuses them unless the
    other model failed on them too."""
    import pandas as pd

    path = Path(path)
    check_is_file(path, "Prediction file")
    failed: list[str] = []
    if path.suffix.lower() in (".json", ".jsonl"):
        rows = _json_rows(path)
        failed = [str(row.get("path")) for row in rows if row.get("error")]
        rows = [row for row in rows if not row.get("error")]
        if not rows:
            raise ValueError(f"{path} holds no predictions.")
        names = list(rows[0]["probabilities"])
        ids = [str(row["path"]) for row in rows]
        for i, row in enumerate(rows):
            if list(row["probabilities"]) != names:
                raise ValueError(
                    f"{path}: the prediction of {ids[i]} has other findings "
                    f"{list(row['probabilities'])} than the first ({names})."
                )
        probabilities = np.array([[row["probabilities"][n] for n in names] for row in rows])
    else:
        frame = read_csv(path)
        id_column = image_column(list(frame.columns), path)
        if "error" in frame.columns:
            bad = frame["error"].notna() & (frame["error"].astype(str).str.strip() != "")
            failed = frame.loc[bad, id_column].astype(str).tolist()
            frame = frame.loc[~bad]
        if frame.empty:  # as for JSON: a comparison on no image is no comparison
            raise ValueError(
                f"{path} holds no predictions"
                + (f" ({len(failed)} rows, every one a read error)." if failed else ".")
            )
        names = [
            str(c)
            for c in frame.columns
            if c != id_column
            and c not in NOT_PROBABILITIES
            and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])
        ]
        if not names:
            raise ValueError(f"{path} has no probability columns (numeric columns per finding).")
        ids = frame[id_column].astype(str).tolist()
        probabilities = frame[names].to_numpy(dtype=np.float64)
    if failed:
        logger.warning(
            "%s: %d image(s) were not scored (read errors), left out: %s%s",
            path, len(failed), ", ".join(failed[:5]), " ..." if len(failed) > 5 else "",
        )  # fmt: skip
    check_unique(ids, str(path))
    bad = ~(np.isfinite(probabilities) & (probabilities >= 0) & (probabilities <= 1))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: {names[j]} of image {ids[i]!r} is {probabilities[i, j]}, not a probability."
        )
    return Predictions(ids, names, probabilities, str(path), {"failed": failed})
