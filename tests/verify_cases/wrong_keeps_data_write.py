# Original: a scaling layer whose `.data` write silently breaks x's gradient.
import torch

torch.manual_seed(0)
x = torch.randn(3, 4, requires_grad=True)
norm = x.norm(dim=1, keepdim=True)
y = x.mul(2.0)
y.data = y * 3.0 / norm
(y * torch.arange(4.0)).sum().backward()
