"""Image folders: class subfolders (single-label), optionally in split folders, or unlabelled images."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import pandas as pd
from datasets import DatasetDict

from .building import build_splits
from .image_paths import IMAGE_SUFFIXES
from .labels import warn_lookalike_names
from .split_files import SPLIT_ALIASES
from .splits import patient_split
from .validation import DataValidationError

logger = logging.getLogger(__name__)


# Folders and files operating systems and tools leave behind; every hidden one (".*") too.
_JUNK_FOLDERS = {"__MACOSX", "__pycache__"}

_JUNK_FILES = {"thumbs.db", "desktop.ini"}  # Windows Explorer's, compared case-blind


def visible_images(root: Path) -> tuple[list[Path], int, list[Path]]:
    """Images under ``root`` (relative paths, sorted), the number of junk entries ignored
    (hidden folders such as ``.ipynb_checkpoints``, ``__MACOSX``, hidden files such as
    ``.DS_Store`` and the AppleDouble ``._name.png`` copies macOS puts beside every file on a
    foreign disk, ``Thumbs.db``, ``desktop.ini``), and the other files, which are not used."""
    images: list[Path] = []
    others: list[Path] = []
    junk = 0
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back into the tree (``up -> ..``): its images again, forever
            logger.warning("Skipped %s: a link to %s, which is read already.", folder, real)
            dirs[:] = []
            continue
        seen.add(real)
        kept = sorted(d for d in dirs if not d.startswith(".") and d not in _JUNK_FOLDERS)
        junk += len(dirs) - len(kept)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith(".") or name.lower() in _JUNK_FILES:
                junk += 1
            elif name.lower().endswith(IMAGE_SUFFIXES):
                images.append(Path(folder, name).relative_to(root))
            else:
                others.append(Path(folder, name).relative_to(root))
    return images, junk, others


def _is_labelled(files: list[Path], folder: Path, labelled: bool | None) -> bool:
    """Whether ``files`` (relative to ``folder``) are ``<class>/<image>``; a mix is refused."""
    if labelled is False:
        return False
    in_classes = [f for f in files if len(f.parts) == 2]
    if labelled is None and not in_classes:
        return False  # no class folder at all: an unlabelled set, at any depth
    if strays := [str(f) for f in files if len(f.parts) != 2]:
        shown = ", ".join(strays[:10]) + (
            f" and {len(strays) - 10} more" if len(strays) > 10 else ""
        )
        if not in_classes:  # labels asked for, none found: often data_dir one level too high
            raise DataValidationError(
                f"{folder} has no class folders (<class>/<image>, or train/<class>/<image>): "
                f"labels are needed, but the images are {shown}. Point data_dir at the folder "
                "that holds the class (or train/, val/, test/) folders."
            )
        raise DataValidationError(
            f"{folder} mixes layouts: {len(in_classes)} images are in class folders "
            f"(<class>/<image>) but {len(strays)} are not: {shown}. Move them into a class folder "
            "or out of the data folder, or pass labelled=False to use every image, at any depth, "
            "without labels."
        )
    return True


def _split_folders(files: list[Path], data_dir: Path) -> dict[str, str] | None:
    """``{folder: split}`` when the top level holds split folders (train/, val/, test/), else None."""
    top = {f.parts[0] for f in files if len(f.parts) > 1}
    # Split folders, as ``datasets``' imagefolder reads them, in any case: public sets ship
    # ``Train/``, ``Val/``, ``Test/`` too, which must not become classes or an unlabelled set.
    splits = {t: SPLIT_ALIASES[t.lower()] for t in top if t.lower() in SPLIT_ALIASES}
    if not splits:
        return None
    strays = sorted(str(f) for f in files if len(f.parts) == 1 or f.parts[0] not in splits)
    if strays or "train" not in splits.values() or len(set(splits.values())) != len(splits):
        raise DataValidationError(
            f"{data_dir} has split folders {sorted(splits)} but "
            + (
                f"also images outside them: {', '.join(strays[:10])}"
                if strays
                else "no train/ folder, or two folders for one split (val/ and validation/?)"
            )
            + ". Use train/ with val/ or validation/ and test/ beside it, each holding class folders."
        )
    return splits


def load_imagefolder(
    data_dir: str | Path,
    labelled: bool | None = None,
    validation_size: float | int = 0.1,
    seed: int = 0,
    check_images: str = "open",
    on_bad: str = "raise",
) -> DatasetDict:
    """Class subfolders (``data_dir/<class>/<image>``, single-label), optionally inside split
    folders (``train/``, ``val/`` or ``validation/``, ``test/``, the same classes in each), or,
    for pre-training, images without labels (any depth). ``labelled=None`` decides from the
    layout and refuses a mix of the two, naming the stray files. Hidden files and folders and
    ``__MACOSX`` are ignored. Without a validation folder, one is split off the training images."""
    data_dir = Path(data_dir)
    files, junk, others = visible_images(data_dir)
    if junk:
        logger.info("Ignored %d hidden or OS/tool files and folders under %s.", junk, data_dir)
    if others:  # a .tif or extensionless DICOM is an X-ray left out: say so, name them
        logger.warning(
            "Left out %d files under %s that are not PNG, JPEG or DICOM (%s): %s%s",
            len(others),
            data_dir,
            "/".join(IMAGE_SUFFIXES),
            ", ".join(map(str, others[:10])),
            f" and {len(others) - 10} more" if len(others) > 10 else "",
        )
    if not files:
        raise DataValidationError(f"No PNG, JPEG or DICOM images under {data_dir}.")
    folders = _split_folders(files, data_dir) or {"": "train"}
    order = ["train", "validation", "test"]
    folders = dict(sorted(folders.items(), key=lambda item: order.index(item[1])))
    by_split: dict[str, list[Path]] = {}
    for folder, split in folders.items():
        root = data_dir / folder
        by_split[split] = [f.relative_to(folder) for f in files if root in (data_dir / f).parents]
    layouts = {
        s: _is_labelled(fs, data_dir / f, labelled)
        for (f, s), fs in zip(folders.items(), by_split.values(), strict=True)
    }
    if len(set(layouts.values())) > 1:
        raise DataValidationError(
            f"{data_dir}: split folders {sorted(s for s, v in layouts.items() if v)} hold class "
            f"folders, {sorted(s for s, v in layouts.items() if not v)} do not."
        )
    is_labelled = next(iter(layouts.values()))
    class_sets = {s: sorted({f.parts[0] for f in fs}) for s, fs in by_split.items()}
    classes = sorted(set().union(*class_sets.values())) if is_labelled else None
    if is_labelled and (differ := {s: c for s, c in class_sets.items() if c != classes}):
        raise DataValidationError(
            f"{data_dir}: the splits must have the same class folders ({classes}); "
            + "; ".join(f"{s} lacks {sorted(set(classes) - set(c))}" for s, c in differ.items())
            + "."
        )
    parts = {}
    for (folder, split), fs in zip(folders.items(), by_split.values(), strict=True):
        rel = [str(Path(folder) / f) for f in fs]
        records = pd.DataFrame({"where": [str(data_dir / r) for r in rel], "path": rel})
        if classes is not None:
            records["label"] = [classes.index(f.parts[0]) for f in fs]
        parts[split] = records
    if classes is not None:
        counts = Counter(f.parts[0] for fs in by_split.values() for f in fs)
        warn_lookalike_names(counts, f"the class folders of {data_dir}")
    out = build_splits(
        parts,
        data_dir,
        str(data_dir),
        class_names=classes,
        check_images=check_images,
        on_bad=on_bad,
    )
    if classes is not None and "validation" not in out:
        out["train"], out["validation"] = patient_split(out["train"], validation_size, seed)
    return DatasetDict(out)
