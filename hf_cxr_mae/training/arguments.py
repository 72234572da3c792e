"""Recipe arguments: model / data dataclasses, ``TrainingArguments`` subclasses with the paper's
defaults, and a strict parser (a YAML or JSON file first, flags override it)."""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..configuration import check_setting, preset_kwargs

logger = logging.getLogger(__name__)


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
    mask_ratio: float = field(default=0.90, metadata={"help": "MAE masking ratio (paper: 0.90)."})
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
    architecture: str = field(
        default="vit", metadata={"help": "'vit' or 'densenet121' (timm CNN baseline)."}
    )

    def __post_init__(self) -> None:
        for name in ("mask_ratio", "drop_path_rate", "pooling"):
            check_setting(name, getattr(self, name), flag=f"--{name}")
        if self.architecture not in ("vit", "densenet121"):
            raise ValueError(
                f"--architecture must be 'vit' or 'densenet121', got {self.architecture!r}."
            )
        if self.image_size is not None and self.image_size <= 0:
            raise ValueError(f"--image_size must be positive, got {self.image_size}.")
        preset_kwargs(self.preset)  # raises with the valid names


# load_cxr_dataset options exposed as flags under their own names (None: the loader's default).
SOURCE_OPTIONS = (
    "image_dir", "uncertainty", "findings", "frontal_only", "views", "validation_size", "csv_file",
    "image_column", "label_column", "label_columns", "label_separator", "labeler", "class_names",
    "check_images", "on_bad", "protocol", "split_files", "metadata_columns",
)  # fmt: skip


def _check_taken(option: str, datasets: list[str]) -> None:
    """Refuse a split option no given dataset takes: it would be dropped without a word."""
    import inspect

    from ..data.loading import SOURCES

    takers = sorted(n for n, f in SOURCES.items() if option in inspect.signature(f).parameters)
    if not any(d in takers for d in datasets):
        raise ValueError(
            f"--{option} is an option of --dataset {' / '.join(takers)}; got datasets {datasets}."
        )


@dataclass
class DataArguments:
    dataset: list[str] | None = field(
        default=None,
        metadata={
            "help": "Source name(s): nih14, chexpert, mimic_cxr, covidx, csv, imagefolder (several for pre-training). None: the built-in DEMO data."
        },
    )
    data_dir: list[str] | None = field(default=None, metadata={"help": "One folder per --dataset."})
    image_dir: str | None = field(
        default=None, metadata={"help": "nih14: subfolder holding the images."}
    )
    uncertainty: str | None = field(
        default=None, metadata={"help": "chexpert/mimic/csv: ones, zeros, ignore or paper."}
    )
    findings: str | None = field(
        default=None, metadata={"help": "chexpert/mimic: 'competition' (5) or 'all' (14)."}
    )
    frontal_only: bool | None = field(
        default=None, metadata={"help": "chexpert: frontal views only."}
    )
    views: list[str] | None = field(
        default=None, metadata={"help": "nih14/mimic: keep these view positions."}
    )
    validation_size: float | None = field(
        default=None, metadata={"help": "Patient-disjoint validation fraction or count."}
    )
    protocol: str | None = field(
        default=None,
        metadata={
            "help": "nih14: 'release' (official test list, validation carved from train_val) or "
            "'paper' (the paper's train/val/test split files, shipped with the package)."
        },
    )
    split_files: str | None = field(
        default=None,
        metadata={
            "help": "Explicit split lists, one file per split: 'train=a.txt,validation=b.txt,"
            "test=c.txt' (a mapping in a config file). Overrides the source's own split."
        },
    )
    csv_file: str | None = field(
        default=None, metadata={"help": "csv: the label file inside data_dir."}
    )
    image_column: str | None = field(default=None, metadata={"help": "csv: the image-path column."})
    label_column: str | None = field(
        default=None, metadata={"help": "csv: one delimited label column."}
    )
    label_columns: list[str] | None = field(
        default=None, metadata={"help": "csv: one column per finding."}
    )
    label_separator: str | None = field(
        default=None,
        metadata={
            "help": "nih14/csv: the separator between the findings of one label cell (default "
            "'|'); findings written with another (';', ',') are refused, naming the rows."
        },
    )
    label_delimiter: str | None = field(
        default=None, metadata={"help": "csv: the old name of --label_separator."}
    )
    metadata_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "csv: columns kept for subgroup analysis; Sex/Gender and Age (or "
            "'sex=COLUMN', 'age=COLUMN') become the normalised sex and age columns."
        },
    )
    labeler: str | None = field(default=None, metadata={"help": "mimic_cxr: chexpert or negbio."})
    class_names: list[str] | None = field(default=None, metadata={"help": "covidx: class order."})
    check_images: str | None = field(
        default=None, metadata={"help": "exists, open or decode (finds truncated files)."}
    )
    on_bad: str | None = field(
        default=None, metadata={"help": "raise (default) or skip bad rows, reporting them."}
    )
    pixel_cache: bool = field(
        default=True, metadata={"help": "Decode images once into the pixel cache."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Pixel cache folder (default under $HF_HOME)."}
    )
    cache_size: int | None = field(
        default=None,
        metadata={
            "help": "Shortest side kept in the cache. None: sized from the recipe's crops (image_size / sqrt(min crop scale), at least the eval resize), so no crop is upsampled from it; a smaller size warns."
        },
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for the cache build."}
    )
    crop_min_scale: float | None = field(
        default=None,
        metadata={"help": "RandomResizedCrop min scale (0.5 pre-training, 0.08 fine-tuning)."},
    )
    auto_augment: str | None = field(
        default="rand-m6-mstd0.5-inc1", metadata={"help": "timm RandAugment string; '' to disable."}
    )
    randaug_interpolation: str = field(
        default="bicubic",
        metadata={
            "help": "RandAugment resampling: bicubic (official), bilinear, or random (timm's default draw)."
        },
    )
    pretrain_normalization: str = field(
        default="per_source",
        metadata={
            "help": "Pre-training: 'per_source' (official: NIH mean 0.5056 / std 0.252, CheXpert and MIMIC-CXR ImageNet's per-channel statistics; other sources the model's) or 'model' (the model's mean / std for every source)."
        },
    )
    mixup: float = field(default=0.0, metadata={"help": "Mixup alpha (off in the paper's recipe)."})
    cutmix: float = field(
        default=0.0, metadata={"help": "CutMix alpha (off in the paper's recipe)."}
    )
    reprob: float = field(
        default=0.0, metadata={"help": "Random erasing probability (off in the paper's recipe)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the training set (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate validation / test sets."}
    )
    demo_size: int = field(default=480, metadata={"help": "Training images of the DEMO data."})

    def __post_init__(self) -> None:
        if self.dataset and (not self.data_dir or len(self.data_dir) != len(self.dataset)):
            raise ValueError(
                f"Give one --data_dir per --dataset: got datasets {self.dataset} and data_dir {self.data_dir}."
            )
        if self.split_files is not None and len(self.dataset or []) != 1:
            raise ValueError(
                f"--split_files names the splits of one --dataset; got datasets {self.dataset}."
            )
        if self.label_delimiter is not None:  # the old name, kept working
            if self.label_separator not in (None, self.label_delimiter):
                raise ValueError(
                    f"--label_delimiter {self.label_delimiter!r} and --label_separator "
                    f"{self.label_separator!r} disagree; pass only --label_separator."
                )
            self.label_separator, self.label_delimiter = self.label_delimiter, None
        for option in ("protocol", "split_files", "metadata_columns", "label_separator"):
            if getattr(self, option) is not None:
                _check_taken(option, self.dataset or [])
        if self.crop_min_scale is not None and not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"--crop_min_scale must be in (0, 1], got {self.crop_min_scale}.")
        if self.cache_size is not None and self.cache_size <= 0:
            raise ValueError(f"--cache_size must be positive, got {self.cache_size}.")
        if self.randaug_interpolation not in ("bicubic", "bilinear", "random"):
            raise ValueError(
                "--randaug_interpolation must be bicubic, bilinear or random, "
                f"got {self.randaug_interpolation!r}."
            )
        if self.pretrain_normalization not in ("per_source", "model"):
            raise ValueError(
                "--pretrain_normalization must be 'per_source' or 'model', "
                f"got {self.pretrain_normalization!r}."
            )
        for name in ("mixup", "cutmix", "reprob"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")

    def source_options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SOURCE_OPTIONS if getattr(self, k) is not None}


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
    operating_point: str = field(
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
        if self.operating_point not in ("youden", "sensitivity", "specificity", "none"):
            raise ValueError(
                "--operating_point must be 'youden', 'sensitivity', 'specificity' or 'none', "
                f"got {self.operating_point!r}."
            )
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
    operating_point: str = field(
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
    tta: str | None = field(
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
        if self.tta not in (None, "", "ten_crop"):
            raise ValueError(f"--tta must be 'ten_crop' or empty, got {self.tta!r}.")
        if self.bootstrap_resamples < 0:
            raise ValueError(f"--bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}.")
        super().__post_init__()


def _load_config_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} must hold a mapping of argument names to values, got {type(data).__name__}."
        )
    return data


def _given(name: str, argv: list[str], config: dict[str, Any]) -> str | None:
    """Where ``name`` was set: ``"flag"``, ``"config"`` or None (its default)."""
    flags = (f"--{name}", f"--{name.replace('_', '-')}")
    if any(a.split("=")[0] in flags for a in argv):
        return "flag"
    return "config" if name in config else None


def _explicit_learning_rate(argv: list[str], config: dict[str, Any], source: str | None) -> bool:
    """Whether a ``learning_rate`` given by the user must win over the recipe's default ``blr``
    (which would otherwise replace it silently). A ``blr`` given at the same level or above
    (a flag over the config file) still wins, as its help says, with a warning."""
    lr, blr = _given("learning_rate", argv, config), _given("blr", argv, config)
    if lr is None:
        return False
    if blr == "flag" or blr == lr:
        logger.warning(
            "Both learning_rate and blr are given: blr wins (absolute LR = blr x effective batch "
            "/ 256) and learning_rate is ignored. Give one of them."
        )
        return False
    logger.info(
        "learning_rate given (%s): used as the absolute LR, not derived from blr.",
        "--learning_rate" if lr == "flag" else source,
    )
    return True


def parse_recipe_args(
    dataclass_types: tuple[type, ...], argv: list[str] | None, default_config: Path | None = None
) -> tuple:
    """Parse ``[config.yaml|json] [--flag value ...]`` into the dataclasses.

    Unknown keys and flags are refused with the valid names (close matches first). With no config
    file and no ``--dataset``, ``default_config`` (the DEMO recipe) is used.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    valid = sorted({a.dest for a in parser._actions if a.dest != "help"})
    config: dict[str, Any] = {}
    source = None
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        source, argv = argv[0], argv[1:]
    elif default_config is not None and not any(a.split("=")[0] == "--dataset" for a in argv):
        source = str(default_config)
    if source is not None:
        config = _load_config_file(source)
        if unknown := sorted(set(config) - set(valid)):
            hints = {k: difflib.get_close_matches(k, valid, n=3) for k in unknown}
            raise ValueError(
                f"Unknown key(s) in {source}: {unknown}. Close matches: {hints}. Valid keys: {valid}"
            )
        parser.set_defaults(**config)
    if "blr" in valid and _explicit_learning_rate(argv, config, source):
        parser.set_defaults(blr=None)  # the absolute LR asked for, not one derived from blr
    *outputs, remaining = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    if remaining:
        flags = [r for r in remaining if r.startswith("-")] or remaining
        hints = {
            f: [
                "--" + m for m in difflib.get_close_matches(f.lstrip("-").split("=")[0], valid, n=3)
            ]
            for f in flags
        }
        raise ValueError(
            f"Unknown argument(s) {remaining}. Close matches: {hints}. Run with --help for all flags."
        )
    return tuple(outputs)
