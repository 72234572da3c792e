"""Run by test_trust_resume's fault-injection test: a fine-tune that freezes at a chosen point
(so the test can SIGKILL it there) after writing ``<output_dir>.frozen``.

    python tests/fault_script.py CONFIG.json FAULT

FAULT: ``cache`` (in the middle of the pixel-cache build), ``step``
(inside step 5, after its backward pass, before the optimizer step), ``save`` (while saving
checkpoint-6: its weights, optimizer and RNG state are written, half of its
``trainer_state.json``).
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recipe_utils import recipe

from hf_cxr_mae.data import cache
from hf_cxr_mae.training import finetune

config, fault = sys.argv[1], sys.argv[2]
frozen = Path(json.loads(Path(config).read_text())["output_dir"] + ".frozen")


def freeze(where: str) -> None:
    frozen.write_text(where)
    time.sleep(600)  # the test kills us here


if fault == "cache":
    decode, calls = cache._decode_batch, []

    def decode_then_freeze(batch, size):
        calls.append(1)
        if len(calls) == 2:
            freeze("cache")
        return decode(batch, size)

    cache._decode_batch = decode_then_freeze


class FaultyTrainer(finetune.CXRTrainer):
    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        if fault == "step" and self.state.global_step == 4:
            freeze("step")
        return loss

    def _save_checkpoint(self, model, trial):
        if fault == "save" and self.state.global_step == 6:
            save = self.state.save_to_json

            def half_then_freeze(path):
                save(path)
                text = Path(path).read_text()
                Path(path).write_text(text[: len(text) // 2])
                freeze("save")

            self.state.save_to_json = half_then_freeze
        return super()._save_checkpoint(model, trial)


finetune.CXRTrainer = FaultyTrainer
recipe("finetune").main([config])
