import torch

torch.manual_seed(0)
x = torch.randn(4, requires_grad=True)
w = torch.randn(4, requires_grad=True)
g = torch.sigmoid(x * w)
g = g.mul(2)
g = g.add(x.detach())
loss = (g * g).sum()
loss.backward()
