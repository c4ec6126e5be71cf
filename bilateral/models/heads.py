"""Classification head: Dropout + Linear, as in the authors' code (p = 0.6)."""

from torch import Tensor, nn


class Head(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.6) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(self.dropout(features))
