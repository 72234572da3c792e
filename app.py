"""Hugging Face Space entry point: the hf-cxr-mae research demo.

Set MODEL_ID (a classifier repo id or folder) and optionally MAE_ID (a pre-trained MAE) in the
Space's settings. Locally: `hf-cxr-mae demo --model DIR [--mae DIR]`.
"""

import os

from hf_cxr_mae.serving.demo import build_demo

demo = build_demo(os.environ.get("MODEL_ID", "out/demo-finetune"), os.environ.get("MAE_ID") or None)

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("HOST", "0.0.0.0"),
        server_port=int(os.environ.get("PORT", "7860")),
    )
