"""Row-sequence LSTM classifier: each image is a sequence of its rows (28 steps of 28
pixels for Fashion-MNIST). Where seed 001's LSTM tricks apply: forget-gate bias 1
(``trickbag.init.lstm_forget_bias``, done here at construction) and gradient-norm
clipping at 5 (the ``fashion-mnist-lstm`` recipe)."""

from __future__ import annotations

import torch
from torch import nn

from trickbag._checks import check_positive
from trickbag.init.apply import lstm_forget_bias
from trickbag.models.registry import MODELS

__all__ = ["RowLSTM", "row_lstm"]


class RowLSTM(nn.Module):
    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: int = 128, layers: int = 1,
                 num_classes: int = 10, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_channels * image_size, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)
        lstm_forget_bias(self, forget_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape  # (B, C, H, W) -> (B, H, C*W): one time step per row
        seq = x.permute(0, 2, 1, 3).reshape(b, h, c * w)
        out, _ = self.lstm(seq)
        return self.fc(out[:, -1])


@MODELS.register("row_lstm")
def row_lstm(in_channels: int = 1, image_size: int = 28, hidden: int = 128, layers: int = 1, num_classes: int = 10,
             forget_bias: float = 1.0) -> RowLSTM:
    """``RowLSTM``: LSTM over image rows, classifier on the last hidden state."""
    check_positive("hidden", hidden)
    check_positive("layers", layers)
    return RowLSTM(in_channels, image_size, hidden, layers, num_classes, forget_bias)
