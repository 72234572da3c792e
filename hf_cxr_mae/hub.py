"""Pushing a model folder to the Hub without ever hurting the run.

``push_folder`` uploads only what a model repo needs (``PUSH_PATTERNS``), retries with backoff,
reports failures and never raises, so a network problem never stops training and never touches
the local checkpoint. ``BackgroundPusher`` runs those pushes on one worker thread, so their
retries never stall training either (``training.run_setup.take_push`` hands a run's push, and
its token, to one).
The model card itself is rendered by ``model_card``.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

# Only these files go to a model repo (never optimizer states, pickles, caches or previews).
PUSH_PATTERNS = [
    "config.json", "*.safetensors", "model.safetensors.index.json", "preprocessor_config.json",
    "README.md", "training_args.json", "metrics.json", "all_results.json", "report.md", "roc.png",
    "confusion_matrix.png", "reliability.png", "subgroups.png", "example.png",
]  # fmt: skip


def check_push_folder(folder: str | Path) -> None:
    """Refuse, before any network call, a folder that does not exist or holds no model files
    (``config.json`` and ``*.safetensors`` weights): retrying could never make it pushable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist (or is not a folder): nothing to push.")
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") or "no files"
        raise ValueError(
            f"{folder} holds no model files (config.json and *.safetensors weights); it has: "
            f"{shown}. Point at a folder written by a recipe or `hf-cxr-mae convert`."
        )


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload model from hf-cxr-mae",
    retries: int = 4,
    backoff: float = 2.0,
    shown_as: str | Path | None = None,
) -> str | None:
    """Upload a model folder's publishable files; retry with exponential backoff.

    Returns the commit URL, or None after reporting the failure (never raises, never deletes).
    ``shown_as`` names the folder in messages when ``folder`` is a temporary snapshot of it.
    """
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    shown = shown_as or folder
    try:
        check_push_folder(folder)
    except (FileNotFoundError, ValueError) as err:
        logger.error("Nothing pushed to %s: %s", repo_id, err)
        return None
    api = HfApi(token=token)
    for attempt in range(retries + 1):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                folder_path=folder,
                repo_id=repo_id,
                allow_patterns=PUSH_PATTERNS,
                ignore_patterns=["*/*"],  # top-level files only: no checkpoints, previews, caches
                commit_message=commit_message,
            )
            url = getattr(info, "commit_url", None) or str(info)
            logger.info("Pushed %s to %s (%s)", shown, repo_id, url)
            return url
        except Exception as err:  # network, HTTP, auth: reported, never raised
            status = getattr(getattr(err, "response", None), "status_code", None)
            final = attempt == retries or (
                isinstance(err, HfHubHTTPError) and status in (401, 403, 404)
            )
            if final:
                logger.error(
                    "Push of %s to %s failed: %s. The local copy is intact; push later with `hf-cxr-mae push %s %s`.",
                    shown,
                    repo_id,
                    err,
                    shown,
                    repo_id,
                )
                return None
            wait = backoff * 2**attempt
            logger.warning(
                "Push to %s failed (attempt %d/%d: %s); retrying in %.1fs.",
                repo_id,
                attempt + 1,
                retries + 1,
                err,
                wait,
            )
            time.sleep(wait)
    return None


_STAGING = ".hub-push-"


def _snapshot(folder: Path) -> Path:
    """Hard links (copies where links fail) to ``folder``'s publishable files, in a hidden sibling
    folder: a checkpoint rotated away while its push waits or retries is still pushed whole."""
    staged = Path(tempfile.mkdtemp(prefix=_STAGING, dir=folder.parent))
    for path in folder.iterdir():
        if path.is_file() and any(fnmatch.fnmatch(path.name, p) for p in PUSH_PATTERNS):
            try:
                os.link(path, staged / path.name)
            except OSError:
                shutil.copy2(path, staged / path.name)
    return staged


class BackgroundPusher:
    """Hub pushes on one background thread, so a slow or failing Hub never stalls training.

    Pushes run one at a time in the order submitted; a push still waiting its turn when a newer
    one arrives is dropped (the latest wins: it holds the newer weights). ``close`` waits a
    bounded time and logs the outcome. The token stays on this object, which nothing writes to
    disk (the Trainer pickles its arguments into every checkpoint, so the token is not kept there).
    """

    def __init__(self, repo_id: str, private: bool | None, token: str | None, retries: int) -> None:
        self.repo_id, self.private, self.retries = repo_id, private, retries
        self._token = token
        self._cond = threading.Condition()
        self._pending: tuple[Path, str, Path | None] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._cleaned: set[Path] = set()
        self.results: list[tuple[str, str | None]] = []

    def submit(self, folder: str | Path, message: str, snapshot: bool = False) -> None:
        """Queue a push of ``folder`` (of a snapshot of it, when its files may change or go)."""
        folder = Path(folder)
        staged = None
        if snapshot:
            self._clean_stale(folder.parent)
            staged = _snapshot(folder)
        with self._cond:
            if self._closed:
                _discard(staged)
                raise RuntimeError(f"push {message!r} submitted after the pusher was closed")
            if self._pending is not None:
                logger.info("Hub push %r skipped: superseded by %r.", self._pending[1], message)
                _discard(self._pending[2])
            self._pending = (folder, message, staged)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="hub-push", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _clean_stale(self, parent: Path) -> None:
        """Snapshots left by a run killed mid-push (once per folder, before our first one)."""
        if parent not in self._cleaned:
            self._cleaned.add(parent)
            for stale in parent.glob(f"{_STAGING}*"):
                _discard(stale)

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                folder, message, staged = self._pending
                self._pending = None
            try:
                url = push_folder(
                    staged or folder, self.repo_id, self.private, self._token, message,
                    self.retries, shown_as=folder,
                )  # fmt: skip
            except Exception:  # push_folder never raises; a bug must not kill the worker
                logger.exception("Hub push %r failed unexpectedly.", message)
                url = None
            finally:
                _discard(staged)
            with self._cond:
                self.results.append((message, url))

    def close(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for queued pushes; log the outcome. False: still running."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "A Hub push to %s is still running after %.0fs (network slow or down?); not "
                "waiting longer. The local copy is intact; push it later with `hf-cxr-mae push`.",
                self.repo_id,
                timeout,
            )
            return False
        failed = [m for m, url in self.results if url is None]
        if failed:
            logger.warning(
                "%d of %d Hub pushes to %s failed (%s); the local copy is intact.",
                len(failed), len(self.results), self.repo_id, "; ".join(failed),
            )  # fmt: skip
        else:
            logger.info("All %d Hub pushes to %s done.", len(self.results), self.repo_id)
        return True


def _discard(staged: Path | None) -> None:
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)


def __getattr__(name: str) -> Any:
    """The card names this module held before it became the Hub module (``model_card`` now)."""
    from . import model_card

    if name.startswith("__") or not hasattr(model_card, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"{__name__}.{name} moved to hf_cxr_mae.model_card.{name}", DeprecationWarning, stacklevel=2
    )
    return getattr(model_card, name)
