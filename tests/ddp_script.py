"""Run by test_two_process_ddp_on_cpu under `accelerate launch --multi_gpu --num_processes 2`."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from recipe_utils import TINY_TRAIN, recipe

from hf_cxr_mae.training import data_setup, finetune

out = Path(sys.argv[1])
record = {"train_ids": [], "eval_counts": []}
original_transform, original_metrics = data_setup.batch_transform, finetune.compute_metrics_fn


def recording_transform(transform, label_order=None, seeds=None):
    inner = original_transform(transform, label_order, seeds)

    def apply(batch):
        if transform is train_transform_marker.get("train"):
            record["train_ids"].extend(batch["image_id"])
        return inner(batch)

    return apply


train_transform_marker = {}
original_create = finetune.create_transform


def marking_create(settings, mode, **kwargs):
    made = original_create(settings, mode, **kwargs)
    if mode == "train":
        train_transform_marker["train"] = made
    return made


def recording_metrics(names, problem_type):
    inner = original_metrics(names, problem_type)

    def compute(prediction):
        record["eval_counts"].append(len(prediction.label_ids))
        return inner(prediction)

    return compute


class RecordingTrainer(finetune.CXRTrainer):
    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        state = self.accelerator.unwrap_model(self.model).state_dict()
        record["checksum"] = round(sum(float(v.double().sum()) for v in state.values()), 6)
        record["world_size"] = self.args.world_size
        record["num_validation"] = len(self.eval_dataset)
        return result


data_setup.batch_transform = recording_transform  # the split transforms are built there
finetune.compute_metrics_fn, finetune.create_transform = recording_metrics, marking_create
finetune.CXRTrainer = RecordingTrainer
recipe("finetune").main(
    [*TINY_TRAIN, "--model_name_or_path", "", "--demo_size", "64", "--max_eval_samples", "21", "--pixel_cache", "false", "--output_dir", str(out / "out"),
     "--max_steps", "3", "--eval_strategy", "steps", "--eval_steps", "3", "--save_strategy", "no", "--load_best_model_at_end", "false"]
)  # fmt: skip
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
(out / f"rank{rank}.json").write_text(json.dumps(record))
