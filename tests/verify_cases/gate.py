# Original with an in-place hazard: sigmoid's output scaled in place, then a residual.
import torch

torch.manual_seed(0)
x = torch.randn(4, requires_grad=True)
w = torch.randn(4, requires_grad=True)
g = torch.sigmoid(x * w)
g.mul_(2)
g.add_(x)
loss = (g * g).sum()
loss.backward()
