"""The reference CNN+BiLSTM in PyTorch (eager, optionally ``torch.compile``), for `peers.py`.

Exactly ``shared/reference-model.md``, in PyTorch's NCHW layout: four blocks of 3x3 conv
(padding 1, bias) -> BatchNorm (momentum 0.01 in PyTorch's convention = Keras's 0.99, eps
1e-3) -> ReLU -> 2x2 max-pool (floor) -> Dropout 0.1; the channels are moved last before the
reshape to ``[B, 18, 4 * 128]`` so each time step's vector is laid out as in sejax and Keras;
a 2-layer bidirectional LSTM of 128 units, mean over time, Dropout 0.3, Linear 8; softmax
cross-entropy, Adam lr 1e-3.

``torch.nn.LSTM`` has two bias vectors per gate (input and hidden); the reference, like Keras
and Flax, has one. The hidden biases are zeroed and frozen, so the trainable parameters and
the arithmetic are the reference's and the count equals sejax's (`REFERENCE_TRAINABLE_PARAMS`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

REFERENCE_TRAINABLE_PARAMS = 1_293_640
CONV_CHANNELS = (32, 64, 128, 128)


class ReferenceNet(nn.Module):
    """``[B, T, F, 1]`` (the reference layout, time first) -> logits ``[B, num_classes]``."""

    def __init__(self, num_mels: int = 64, num_classes: int = 8, lstm_units: int = 128):
        super().__init__()
        blocks: list[nn.Module] = []
        cin = 1
        for cout in CONV_CHANNELS:
            blocks += [
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Dropout(0.1),
            ]
            cin = cout
        self.conv = nn.Sequential(*blocks)
        bands = num_mels // 2 ** len(CONV_CHANNELS)
        self.lstm = nn.LSTM(
            bands * cin, lstm_units, num_layers=2, bidirectional=True, batch_first=True
        )
        for name, param in self.lstm.named_parameters():
            if name.startswith("bias_hh"):
                nn.init.zeros_(param)
                param.requires_grad_(False)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(2 * lstm_units, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.permute(0, 3, 1, 2))  # [B, T, F, 1] -> [B, 1, T, F] -> [B, C, T', F']
        x = x.permute(0, 2, 3, 1)  # [B, T', F', C]: channels last, as in sejax and Keras
        x = x.reshape(x.shape[0], x.shape[1], -1)
        x, _ = self.lstm(x)
        return self.head(self.dropout(x.mean(dim=1)))


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_step(
    batch: int,
    *,
    compile: bool = False,
    seed: int = 0,
    num_frames: int = 301,
    num_mels: int = 64,
    num_classes: int = 8,
) -> tuple[Callable[[], float], nn.Module]:
    """``(step, model)``: ``step()`` runs one eager (or compiled) train step on a fixed batch.

    Training mode (batch statistics, dropout on); ``loss.item()`` waits for the step.
    """
    torch.manual_seed(seed)
    model = ReferenceNet(num_mels, num_classes).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(batch, num_frames, num_mels, 1)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, num_classes, size=batch).astype(np.int64))

    def train_step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    fn = torch.compile(train_step) if compile else train_step

    def step() -> float:
        return float(fn().item())

    return step, model


def versions() -> dict[str, object]:
    return {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads()}  # fmt: skip
