"""Image rows checked against the disk: paths kept inside the data folder, files present and
readable, and each file (by path or by content) listed once."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from PIL import Image as PILImage

from .duplicates import content_digests, drop_duplicates
from .images import DICOM_SUFFIXES, verify_dicom
from .validation import Problem, raise_or_skip

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)


def check_image(path: Path, level: str) -> str | None:
    """None if the image is usable at this check level, else the reason.

    ``"open"`` reads the header (cheap; catches missing, non-image and wrong-format files),
    ``"decode"`` decodes every pixel (also catches truncated files), ``"exists"`` only checks
    the file is there. DICOM pixels are decoded at ``"open"`` too: its header cannot tell a
    missing, short or broken pixel stream, and building the dataset decodes them anyway.
    """
    if not path.is_file():
        return "file not found"
    if level == "exists":
        return None
    if path.suffix.lower() in DICOM_SUFFIXES:
        try:
            verify_dicom(path)
        except ImportError:
            raise
        except Exception as err:
            return f"unreadable DICOM: {err}"
        return None
    try:
        with PILImage.open(path) as image:
            if level == "decode":
                image.load()
            else:
                image.size  # noqa: B018 - forces the header parse
    except Exception as err:
        return f"unreadable image ({type(err).__name__}: {err})"
    return None


def resolve_paths(
    records: pd.DataFrame, data_dir: Path, check_images: str, on_bad: str
) -> pd.DataFrame:
    """Resolve ``records.path`` under ``data_dir`` and validate each row; returns the good rows."""
    if check_images not in ("exists", "open", "decode"):
        raise ValueError(
            f"check_images must be 'exists', 'open' or 'decode', got {check_images!r}."
        )
    # Lexical check: '../' tricks are refused, but symlinks the user placed inside are followed.
    root = Path(os.path.normpath(data_dir.absolute()))
    problems: list[Problem] = []
    resolved: list[str] = []
    for where, rel in zip(records["where"], records["path"], strict=True):
        full = Path(os.path.normpath(root / str(rel)))
        if not full.is_relative_to(root):
            problems.append(Problem(where, f"path {rel!r} escapes the data folder {root}"))
        elif full.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(Problem(where, f"{rel!r} is not a PNG, JPEG or DICOM file"))
        elif (reason := check_image(full, check_images)) is not None:
            problems.append(Problem(where, f"{full}: {reason}"))
        resolved.append(str(full))
    records = records.assign(path=resolved)
    skipped = raise_or_skip(problems, on_bad, "image rows")
    records = records[~records["where"].isin(skipped)].reset_index(drop=True)
    records = drop_duplicates(records, "path", on_bad, "image rows")
    # The same file under another name (a symlink, a hard link, a copy) is the same image too:
    # kept twice, its copies could land on both sides of a validation split, or disagree.
    paths = list(records["path"])
    same = content_digests({p: {p} for p in paths})
    first: dict[str, str] = {}
    image = [f"same bytes as {first.setdefault(same[p], p)}" if p in same else p for p in paths]
    records = drop_duplicates(records.assign(image=image), "image", on_bad, "image rows", ["path"])
    return records.drop(columns="image")
