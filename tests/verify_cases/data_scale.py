# The seed's silent scaling bug: `x.data = ...` runs, and x.grad is all ones.
import torch

scale = 3.0
x = torch.randn(2, 4, requires_grad=True)
norm = torch.norm(x, dim=1, keepdim=True)
x.data = x * scale / norm.data
loss = (x * torch.arange(4.0)).sum()
loss.backward()
