"""Model folders load from safetensors only (DESIGN.md, "Safe loading"): a folder whose weights
exist only as pickles (``pytorch_model.bin`` and the like) is refused in words, before
transformers would unpickle them."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

# Weights files transformers would load instead of safetensors: pickles (sharded ones too), and
# TensorFlow / Flax weights, which we never load either.
_PICKLED = ("pytorch_model*.bin", "tf_model.h5", "flax_model.msgpack")


def require_safetensors(model_name_or_path: str | PathLike) -> None:
    """Raise ``ValueError`` naming the files when a local model folder holds weights but no
    ``*.safetensors``, or a ``*.safetensors`` file that is empty, truncated or corrupt
    (``checkpoint_files.check_safetensors``); a Hub id is left to
    ``from_pretrained(..., use_safetensors=True)``."""
    folder = Path(model_name_or_path)
    if not folder.is_dir():
        return
    if safetensors := sorted(folder.glob("*.safetensors")):
        from .checkpoint_files import check_safetensors

        # An empty or cut copy is named here, not left to safetensors' bare SafetensorError.
        for path in safetensors:
            check_safetensors(path)
        return
    pickled = sorted({p.name for pattern in _PICKLED for p in folder.glob(pattern)})
    if not pickled:
        return  # no weights at all: transformers names what is missing
    raise ValueError(
        f"{folder} holds its weights only as {', '.join(pickled)} (a pickle, which can run code "
        "when loaded); hf-cxr-mae loads safetensors only. If you trust the file, re-save the "
        "model as safetensors: AutoModelForImageClassification.from_pretrained(folder)"
        ".save_pretrained(folder)."
    )


def no_safetensors_message(model_name_or_path: str, err: Exception) -> str | None:
    """The sentence for transformers' error when ``use_safetensors=True`` finds none (a Hub
    repository with ``pytorch_model.bin`` only), else None."""
    if "safetensors" not in str(err):
        return None
    return (
        f"{model_name_or_path} has no safetensors weights ({err}); hf-cxr-mae loads safetensors "
        "only, never pickled weights such as pytorch_model.bin."
    )
