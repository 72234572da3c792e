"""Training: recipe arguments, the Trainer subclass, LR schedule, resume, one straight-line module
per run (``pretrain``, ``finetune``, ``linprobe``, ``evaluation``: arguments and checkpoint checked
before any data is read, data, model, transforms, Trainer, train, save, evaluate, publish) and what
a run leaves behind (``outputs``)."""

from .arguments import (
    CXRTrainingArguments,
    DataArguments,
    EvaluateArguments,
    FinetuneArguments,
    LinprobeArguments,
    ModelArguments,
    PretrainArguments,
    parse_recipe_args,
)
from .callbacks import ReconstructionPreviewCallback
from .schedule import lr_at_step, warmup_cosine_scheduler
from .trainer import CXRTrainer, last_complete_checkpoint

__all__ = [
    "CXRTrainer",
    "CXRTrainingArguments",
    "DataArguments",
    "EvaluateArguments",
    "FinetuneArguments",
    "LinprobeArguments",
    "ModelArguments",
    "PretrainArguments",
    "ReconstructionPreviewCallback",
    "last_complete_checkpoint",
    "lr_at_step",
    "parse_recipe_args",
    "warmup_cosine_scheduler",
]
