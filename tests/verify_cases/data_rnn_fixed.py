# The RNN with the hidden state rebound: i2h gets its gradient.
import torch
from torch import nn


class TinyRNN(nn.Module):
    def __init__(self, n_in, n_hidden):
        super().__init__()
        self.n_hidden = n_hidden
        self.i2h = nn.Linear(n_in + n_hidden, n_hidden)
        self.h2o = nn.Linear(n_hidden, 1)

    def forward(self, sequence):
        hidden = torch.zeros(1, self.n_hidden)
        for step in sequence:
            combined = torch.cat([step.unsqueeze(0), hidden], dim=1)
            hidden = torch.tanh(self.i2h(combined))
        return self.h2o(hidden)


torch.manual_seed(0)
model = TinyRNN(3, 5)
out = model(torch.randn(4, 3))
out.sum().backward()
