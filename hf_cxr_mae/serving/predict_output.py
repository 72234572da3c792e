"""The results file of ``hf-cxr-mae predict --output``: what counts as one that predict wrote,
resuming it (done rows, failed rows, a row cut short), and appending each batch so that a full
disk or a crash leaves whole rows only.

A non-empty file counts as written by predict when ``<output>.model`` (the record of the model
that wrote it) lies beside it and its content has predict's shape: a CSV whose first row is
``path, error, <one column per finding>, flagged``; a JSON lines file whose every complete line
is an object with a ``path`` and either ``probabilities`` or an ``error``. Anything else is left
untouched and refused before any change.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .predict import Prediction

logger = logging.getLogger(__name__)

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class OutputError(OSError):
    """An output file or folder that cannot be written (full disk, read-only folder); the
    message names it and says what to do."""


def output_error(path: Path, err: OSError) -> OutputError:
    """``err`` (raised writing ``path``) as a one-line ``OutputError`` naming ``path``."""
    if err.errno in _NO_SPACE:
        text = (
            f"no space left on {path} (disk full or quota reached): the rows written before are "
            "kept; free some space and run the same command again to finish it."
        )
    else:
        text = f"cannot write {path}: {err.strerror or err}."
    error = OutputError(text)
    error.errno = err.errno
    return error


def check_writable(path: Path, flag: str, is_folder: bool = False) -> None:
    """Raise ``OutputError`` naming the folder when files cannot be created in the folder of
    ``path`` (``path`` itself with ``is_folder``), or when an existing ``path`` is read-only;
    a folder still to be made is judged by the nearest one that exists."""
    path = Path(path)
    folder = path if is_folder else path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"{flag} {path}: the folder {existing} is read-only (no permission to create files "
            "in it); name a writable one."
        )
    if not is_folder and path.is_file() and not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {path}: the file is read-only; name another one.")


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
    if difference := _difference(stamp.read_text(encoding="utf-8"), identity):
        raise ValueError(
            f"{output} holds {difference}; pass another --output, or delete {output} and {stamp}."
        )


def run_record(model, fast: bool) -> str:
    """What ``<output>.model`` holds, one ``key: value`` a line: ``weights`` (their fingerprint,
    see ``predict._identity``) and ``run`` (backend and precision), which a resume must match,
    then ``model`` (the folder or graph; informative: a byte-identical copy of it resumes)."""
    from .predict import _identity, is_onnx

    if is_onnx(model):
        from .onnx_runtime import files_sha256

        where = Path(model.path).resolve()
        weights, run = f"sha256:{files_sha256([where])}", f"ONNX Runtime {model.variant}"
    else:
        identity = _identity(model)
        where, found, digest = identity.rpartition(" sha256:")
        if identity.startswith("in-memory "):
            weights, where = identity, "in memory"
        elif found:
            weights = f"sha256:{digest}"
        else:  # a Hub id, or a folder without weights files: its name is all there is
            weights = where = identity
        run = "float32 (--no_fast)"
        if fast:
            from .inference import native_bf16

            device = next(model.parameters()).device
            run = f"fast path, {'bfloat16' if native_bf16(device) else 'float32'}"
    return f"weights: {weights}\nrun: {run}\nmodel: {where}"


def _fields(record: str) -> dict[str, str]:
    """``key: value`` lines of a ``<output>.model`` record (``run_record``); an older
    one-line record (folder and fingerprint, no run settings) has no ``run``."""
    lines = record.strip().splitlines()
    if len(lines) == 1 and not lines[0].startswith("weights: "):  # "<folder> sha256:<digest>"
        where, found, digest = lines[0].rpartition(" sha256:")
        if found and not where.startswith("in-memory "):
            return {"weights": f"sha256:{digest}", "model": where}
        return {"weights": lines[0]}
    return dict(line.partition(": ")[::2] for line in lines)


def _difference(previous: str, identity: str) -> str | None:
    """What differs between the record of a file's rows and this run, in words; None when the
    rows may be resumed: same weights and same run settings (the folder is informative only)."""
    before, now = _fields(previous), _fields(identity)
    if before.get("weights") != now.get("weights"):
        return (
            f"predictions of another model ({before.get('weights')} from "
            f"{before.get('model', 'an older record')}), not of {now.get('weights')} from "
            f"{now.get('model')}"
        )
    if "run" not in before:
        return (
            f"predictions of this model from an older hf-cxr-mae that did not record how it ran "
            f"(now: {now.get('run')}), so mixing cannot be ruled out"
        )
    if before.get("run") != now.get("run"):
        return (
            f"predictions of this model run otherwise (run: {before.get('run', 'not recorded')}"
            f" then, {now.get('run')} now): one file would mix both; rerun with the first "
            "run's settings (--no_fast / the default fast path, the same --backend)"
        )
    return None


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
            self._append(self._csv([self._header()]))

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
        self._append("".join(lines).encode("utf-8") if self.jsonl else self._csv(rows))

    def _append(self, data: bytes) -> None:
        """``data`` at the end of the file and on disk, or the file as it was and OutputError."""
        start = os.fstat(self.fd).st_size
        try:
            view, done = memoryview(data), 0
            while done < len(data):
                written = os.write(self.fd, view[done:])
                if written <= 0:  # no progress: the file system takes no more
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += written
            os.fsync(self.fd)
        except OSError as err:
            try:  # half a batch (half a row) must not stay: a rerun continues from whole rows
                os.ftruncate(self.fd, start)
            except OSError:  # the rerun still cuts a row left half-written (drop_partial_row)
                logger.warning(
                    "%s: could not remove the rows of the batch that failed.", self.output
                )
            raise output_error(self.output, err) from err

    def close(self) -> None:
        os.close(self.fd)
