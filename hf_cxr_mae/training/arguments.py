"""Recipe arguments: the model dataclass and ``TrainingArguments`` subclasses with the paper's
defaults (``DataArguments`` lives in ``data_setup``; ``argument_parser.parse_recipe_args`` reads
them all)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from ..configuration import MASK_RATIO, check_setting, preset_kwargs
from ..data.source_arguments import check_choices

# Their old home: the names still work from here.
from .argument_parser import parse_recipe_args  # noqa: F401
from .data_setup import DataArguments  # noqa: F401

logger = logging.getLogger(__name__)

OperatingPoint = Literal["youden", "sensitivity", "specificity", "none"]


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A pre-trained MAE or a classifier (folder or Hub id). None: start from scratch with --preset."
        },
    )
    preset: str = field(
        default="vit-small-patch16-dec512d2b",
        metadata={"help": "Model preset when starting from scratch."},
    )
    mask_ratio: float = field(default=MASK_RATIO, metadata={"help": "MAE masking ratio (paper: 0.90)."})
    norm_pix_loss: bool = field(
        default=False, metadata={"help": "MAE loss on per-patch normalised pixels."}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Input size; default: the checkpoint's or preset's."}
    )
    drop_path_rate: float = field(
        default=0.2, metadata={"help": "Stochastic depth at the last block (paper: 0.2)."}
    )
    pooling: str = field(
        default="mean", metadata={"help": "Classifier pooling: 'mean' (MAE) or 'cls'."}
    )
    reinit_head: bool = field(
        default=False, metadata={"help": "New head even if the checkpoint's label count differs."}
    )
    architecture: Literal["vit", "densenet121"] = field(
        default="vit", metadata={"help": "'vit' or 'densenet121' (timm CNN baseline)."}
    )

    def __post_init__(self) -> None:
        for name in ("mask_ratio", "drop_path_rate", "pooling"):
            check_setting(name, getattr(self, name), flag=f"--{name}")
        check_choices(self)
        if self.image_size is not None and self.image_size <= 0:
            raise ValueError(f"--image_size must be positive, got {self.image_size}.")
        preset_kwargs(self.preset)  # raises with the valid names


@dataclass
class CXRTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the MAE recipe's schedule fields."""

    blr: float | None = field(
        default=None,
        metadata={
            "help": "Base LR: absolute LR = blr * effective batch / 256 (overrides --learning_rate)."
        },
    )
    min_lr: float = field(default=0.0, metadata={"help": "LR at the end of the half-cycle cosine."})
    warmup_epochs: float = field(
        default=0.0, metadata={"help": "Linear warmup length in epochs (or use --warmup_steps)."}
    )
    layer_decay: float | None = field(
        default=None, metadata={"help": "Layer-wise LR decay (fine-tuning; paper: 0.55)."}
    )
    preview_steps: int = field(
        default=0,
        metadata={"help": "Write an MAE reconstruction preview every N steps (0: at each save)."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: transforms need the raw columns."}
    )
    auto_resume: bool = field(
        default=True, metadata={"help": "Resume from the newest complete checkpoint in output_dir."}
    )
    bf16: bool = field(
        default=True,
        metadata={
            "help": "bf16 autocast where the hardware has it (GPU, or a CPU with AVX-512 BF16 / AMX); fp32 elsewhere."
        },
    )
    push_retries: int = field(
        default=4, metadata={"help": "Hub push attempts after the first, with exponential backoff."}
    )
    push_timeout: float = field(
        default=600.0,
        metadata={
            "help": "Seconds the end of a run waits for its Hub pushes (they run in the background)."
        },
    )
    max_grad_norm: float = field(
        default=0.0,
        metadata={"help": "Gradient clipping norm; 0 = off (the paper's recipe does not clip)."},
    )

    def __post_init__(self) -> None:
        check_choices(self)  # operating_point, tta: a config file's values skip argparse's choices
        if self.per_device_train_batch_size <= 0 or self.per_device_eval_batch_size <= 0:
            raise ValueError(
                f"Batch sizes must be positive, got train {self.per_device_train_batch_size}, eval {self.per_device_eval_batch_size}."
            )
        if self.blr is not None and self.blr <= 0:
            raise ValueError(f"--blr must be positive, got {self.blr}.")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be positive, got {self.learning_rate}.")
        if self.min_lr < 0 or self.warmup_epochs < 0:
            raise ValueError(
                f"--min_lr and --warmup_epochs must be >= 0, got {self.min_lr}, {self.warmup_epochs}."
            )
        if self.layer_decay is not None:
            check_setting("layer_decay", self.layer_decay, flag="--layer_decay")
        if self.push_retries < 0 or self.push_timeout < 0:
            raise ValueError(
                f"--push_retries and --push_timeout must be >= 0, got {self.push_retries}, {self.push_timeout}."
            )
        if self.dataloader_persistent_workers and self.dataloader_num_workers > 0:
            # Seeded augmentation reads the epoch in each worker, which persistent workers would
            # never see change: every epoch would repeat the same crops.
            raise ValueError(
                "--dataloader_persistent_workers is not supported: workers must restart each epoch."
            )
        self._resolve_bf16()
        super().__post_init__()
        if self.blr is not None:
            self.learning_rate = self.blr * self.effective_batch_size / 256

    def _resolve_bf16(self) -> None:
        """bf16 (the default) where the hardware runs it natively: a bf16 GPU, or CPU autocast on a
        CPU with AVX-512 BF16 / AMX; else fp32 with a warning, instead of transformers' hard error."""
        import torch

        if (
            not self.bf16
            or self.use_cpu
            or torch.cuda.is_available()
            or torch.backends.mps.is_available()
        ):
            return
        from ..serving.inference import native_bf16

        if native_bf16("cpu"):
            self.use_cpu = True
        else:
            logger.warning(
                "--bf16 asked for, but there is no GPU and this CPU lacks bf16: training in fp32."
            )
            self.bf16 = False

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.world_size


@dataclass
class PretrainArguments(CXRTrainingArguments):
    """The paper's MAE pre-training recipe (ViT-S on NIH + CheXpert, 8 GPUs x 256)."""

    output_dir: str | None = field(
        default="out/pretrain", metadata={"help": "Where checkpoints and the model go."}
    )
    num_train_epochs: float = field(default=800, metadata={"help": "Epochs (paper: 800)."})
    warmup_epochs: float = field(default=40, metadata={"help": "Warmup epochs (paper: 40)."})
    blr: float | None = field(default=1.5e-4, metadata={"help": "Base LR (paper: 1.5e-4)."})
    weight_decay: float = field(
        default=0.05, metadata={"help": "AdamW weight decay (paper: 0.05)."}
    )
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (MAE: 0.95)."})
    token_weight_decay: bool = field(
        default=True,
        metadata={
            "help": "Weight decay on the cls token too (official pre-training decays every parameter of 2+ dimensions, cls and mask tokens included); false exempts the cls token as fine-tuning does."
        },
    )
    dataloader_drop_last: bool = field(
        default=True,
        metadata={
            "help": "Drop the last partial training batch (official): an epoch is floor(N / global batch) steps. Evaluation never drops."
        },
    )
    per_device_train_batch_size: int = field(
        default=256, metadata={"help": "Per-device batch (paper: 256 x 8)."}
    )
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint."})
    save_total_limit: int | None = field(default=3, metadata={"help": "Checkpoints kept."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    label_names: list[str] | None = field(
        default_factory=lambda: ["pixel_values"],
        metadata={"help": "Kept so an eval loss is computed."},
    )


@dataclass
class FinetuneArguments(CXRTrainingArguments):
    """The paper's fine-tuning recipe (NIH ChestX-ray14, 8 GPUs x 128)."""

    output_dir: str | None = field(
        default="out/finetune", metadata={"help": "Where checkpoints and the model go."}
    )
    num_train_epochs: float = field(default=75, metadata={"help": "Epochs (paper: 75)."})
    warmup_epochs: float = field(default=5, metadata={"help": "Warmup epochs (paper: 5)."})
    blr: float | None = field(default=2.5e-4, metadata={"help": "Base LR (paper: 2.5e-4)."})
    min_lr: float = field(default=1e-5, metadata={"help": "Final LR (paper: 1e-5)."})
    layer_decay: float | None = field(
        default=0.55, metadata={"help": "Layer-wise LR decay (paper: 0.55)."}
    )
    weight_decay: float = field(
        default=0.05, metadata={"help": "AdamW weight decay (paper: 0.05)."}
    )
    per_device_train_batch_size: int = field(
        default=128, metadata={"help": "Per-device batch (paper: 128 x 8)."}
    )
    dataloader_drop_last: bool = field(
        default=True,
        metadata={
            "help": "Drop the last partial training batch (official): an epoch is floor(N / global batch) steps. Evaluation never drops."
        },
    )
    eval_strategy: str = field(
        default="epoch", metadata={"help": "Evaluate on validation every epoch."}
    )
    save_strategy: str = field(default="epoch", metadata={"help": "Checkpoint every epoch."})
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept (the best is always kept)."}
    )
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Keep the best epoch on VALIDATION."}
    )
    metric_for_best_model: str | None = field(
        default="mauc", metadata={"help": "Validation metric that picks the best."}
    )
    greater_is_better: bool | None = field(
        default=True, metadata={"help": "Higher mAUC is better."}
    )
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    operating_point: OperatingPoint = field(
        default="youden",
        metadata={
            "help": "Per-finding thresholds chosen on the VALIDATION split after training, saved "
            "in config.json (multi-label): 'youden' (Youden's J), 'sensitivity' or 'specificity' "
            "(the threshold reaching --operating_target of it), or 'none'."
        },
    )
    operating_target: float = field(
        default=0.9,
        metadata={"help": "Target sensitivity / specificity of --operating_point (0 < t < 1)."},
    )
    temperature_scaling: bool = field(
        default=False,
        metadata={
            "help": "Fit a temperature on the validation split (per finding multi-label, one "
            "single-label) and fold it into the head: saved probabilities are calibrated."
        },
    )
    bootstrap_resamples: int = field(
        default=1000,
        metadata={"help": "Bootstrap resamples for the test report's 95%% intervals."},
    )

    def __post_init__(self) -> None:
        if not 0 < self.operating_target < 1:
            raise ValueError(f"--operating_target must be in (0, 1), got {self.operating_target}.")
        if self.bootstrap_resamples < 0:
            raise ValueError(f"--bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}.")
        super().__post_init__()


@dataclass
class LinprobeArguments(FinetuneArguments):
    """MAE's linear probe: frozen encoder, BatchNorm + Linear head, LARS (90 epochs, blr 0.1, no wd)."""

    output_dir: str | None = field(
        default="out/linprobe", metadata={"help": "Where checkpoints and the model go."}
    )
    num_train_epochs: float = field(default=90, metadata={"help": "Epochs (MAE: 90)."})
    warmup_epochs: float = field(default=10, metadata={"help": "Warmup epochs (MAE: 10)."})
    blr: float | None = field(default=0.1, metadata={"help": "Base LR for LARS (MAE: 0.1)."})
    min_lr: float = field(default=0.0, metadata={"help": "Final LR."})
    weight_decay: float = field(
        default=0.0, metadata={"help": "No weight decay (MAE linear probe)."}
    )
    layer_decay: float | None = field(
        default=None, metadata={"help": "Unused: only the head trains."}
    )
    per_device_train_batch_size: int = field(
        default=512, metadata={"help": "Per-device batch (official linear probe: 512 per GPU)."}
    )
    operating_point: OperatingPoint = field(
        default="none",
        metadata={"help": "Not available: fine-tune for thresholds stored with the model."},
    )

    def __post_init__(self) -> None:
        # A probe measures the encoder; its folded copy is what is saved, so thresholds or
        # temperatures fitted on the probe would be silently dropped: refuse them instead.
        if self.operating_point != "none" or self.temperature_scaling:
            raise ValueError(
                "--operating_point and --temperature_scaling are fine-tuning options: a linear "
                "probe measures the encoder and stores no thresholds or temperatures."
            )
        super().__post_init__()


@dataclass
class EvaluateArguments(CXRTrainingArguments):
    """Evaluation of a classifier checkpoint on one split."""

    output_dir: str | None = field(
        default="out/evaluate", metadata={"help": "Where metrics.json goes."}
    )
    split: str = field(
        default="test",
        metadata={
            "help": "The split to evaluate; 'all': every image of the dataset (external data "
            "without a split of its own)."
        },
    )
    label_map: str | None = field(
        default=None,
        metadata={
            "help": "A dataset of another source than the model's: 'auto' (the harmonised label "
            "table) or a JSON / YAML file {dataset label: model finding, 'No Finding' or null}; "
            "only the shared findings are scored."
        },
    )
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Batch size."})
    tta: Literal["", "ten_crop"] | None = field(
        default=None,
        metadata={
            "help": "Test-time augmentation: 'ten_crop' (averages ten crops; the official "
            "evaluation is one centre crop, the default) or none."
        },
    )
    bootstrap_resamples: int = field(
        default=1000, metadata={"help": "Bootstrap resamples for the 95%% confidence intervals."}
    )

    def __post_init__(self) -> None:
        if self.bootstrap_resamples < 0:
            raise ValueError(f"--bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}.")
        super().__post_init__()
