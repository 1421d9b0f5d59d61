"""`shoal.tensors.adam`, the learners' optimizer: torch's fused Adam kernel, checked against
Adam written out as a loop (Kingma & Ba 2015, Algorithm 1) over steps with param groups."""

from __future__ import annotations

import math

import torch

from shoal.tensors import adam


def slow_adam(params, grads_per_step, lrs, betas=(0.9, 0.999), eps=1e-8):
    """Adam, one scalar at a time."""
    b1, b2 = betas
    params = [p.clone().flatten().tolist() for p in params]
    m = [[0.0] * len(p) for p in params]
    v = [[0.0] * len(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g.flatten().tolist()
            for j in range(len(p)):
                m[i][j] = b1 * m[i][j] + (1 - b1) * g[j]
                v[i][j] = b2 * v[i][j] + (1 - b2) * g[j] ** 2
                m_hat = m[i][j] / (1 - b1**t)
                v_hat = v[i][j] / (1 - b2**t)
                p[j] -= lrs[i] * m_hat / (math.sqrt(v_hat) + eps)
    return params


def test_fused_adam_is_adam_with_param_groups():
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    params = [p.clone().requires_grad_() for p in start]
    opt = adam([{"params": [params[0]], "lr": 1e-2}, {"params": [params[1]], "lr": 3e-3}], 1e-2)
    assert opt.defaults["fused"] is True
    steps = [[torch.randn(p.shape, generator=gen) for p in start] for _ in range(20)]
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    expected = slow_adam(start, steps, [1e-2, 3e-3])
    for p, want in zip(params, expected):
        assert torch.allclose(p.detach().flatten(), torch.tensor(want), atol=1e-6), (p, want)
    assert not torch.allclose(params[0].detach(), start[0])  # it moved
