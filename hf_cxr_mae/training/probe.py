"""MAE's linear probe: a frozen encoder with a BatchNorm (no affine) and a Linear head."""

from __future__ import annotations

import torch

from ..modeling import CXRViTForImageClassification


class LinearProbe(torch.nn.Module):
    """Frozen encoder (eval mode) -> pooled feature -> BatchNorm (no affine) -> Linear (MAE's probe)."""

    def __init__(self, classifier: CXRViTForImageClassification) -> None:
        super().__init__()
        self.classifier = classifier
        self.config = classifier.config
        self.norm = torch.nn.BatchNorm1d(classifier.config.hidden_size, affine=False, eps=1e-6)
        for p in classifier.beit.parameters():
            p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.beit.eval()  # frozen features: no dropout / drop path
        return self

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import ImageClassifierOutput

        with torch.no_grad():
            features = self.classifier.beit(pixel_values).pooler_output
        return ImageClassifierOutput(logits=self.classifier.classifier(self.norm(features)))

    def folded(self) -> CXRViTForImageClassification:
        """The classifier with the BatchNorm folded into its Linear: a plain native checkpoint."""
        head = self.classifier.classifier
        scale = 1.0 / torch.sqrt(self.norm.running_var + self.norm.eps)
        with torch.no_grad():
            bias = head.bias - head.weight @ (self.norm.running_mean * scale)
            head.weight.mul_(scale)
            head.bias.copy_(bias)
        return self.classifier
