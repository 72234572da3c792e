"""What the recipes run, one module each: ``pretrain``, ``finetune``, ``linprobe`` and
``evaluation``. Each ``run_*`` is a straight line (transformers-examples style): check arguments
and the checkpoint before reading any data, load data (an empty training split is refused, an
empty validation or test split skipped with a warning), build the model, set transforms, train,
save the model, its image processor and its card at the root of ``output_dir`` (before anything
that can fail after training), evaluate, then the card again with the metrics, and the push.
"""

from .evaluation import run_evaluate
from .finetune import run_finetune
from .linprobe import run_linprobe
from .pretrain import run_pretrain

__all__ = ["run_evaluate", "run_finetune", "run_linprobe", "run_pretrain"]
