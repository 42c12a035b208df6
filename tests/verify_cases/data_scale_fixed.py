# The scaling written out of place; `norm.data` stays a deliberate stop-gradient.
import torch

scale = 3.0
x = torch.randn(2, 4, requires_grad=True)
norm = torch.norm(x, dim=1, keepdim=True)
y = x * scale / norm.data
loss = (y * torch.arange(4.0)).sum()
loss.backward()
