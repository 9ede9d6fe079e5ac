"""The trainer's optimisers and loss accumulation (avaga_lib.training.step): fused Adam on CUDA only, CPU steps exactly
as
before, a loaded state keeping the training device's update kernel, the loss terms summed on the device."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from avaga_lib.config import TrainConfig
from avaga_lib.training import step


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 3))


def _steps(net: nn.Module, opt: torch.optim.Optimizer, n: int, seed: int = 1) -> torch.Tensor:
    """``n`` optimisation steps on fixed random batches; the parameters afterwards, flattened."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        net(torch.rand(4, 3, 12, 12, generator=g)).square().mean().backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_adam_kernel_choice_is_fused_on_cuda_only() -> None:
    assert step.adam_kwargs("cuda") == {"fused": True}
    assert step.adam_kwargs("cpu") == {} and step.adam_kwargs("mps") == {}


def test_cpu_adam_steps_exactly_as_the_plain_optimiser_of_before() -> None:
    """On CPU the trainer's Adam is today's ``Adam(params, lr, betas)``: same param groups, bit-equal steps."""
    tc = TrainConfig()
    a, b = _net(), _net()
    ours = step.make_adam(a.parameters(), tc, "cpu")
    before = torch.optim.Adam(b.parameters(), lr=tc.lr, betas=tc.betas)
    group = ours.param_groups[0]
    assert group["fused"] is None and group["foreach"] is None
    assert ours.state_dict()["param_groups"] == before.state_dict()["param_groups"]  # the checkpoint's bytes too
    assert torch.equal(_steps(a, ours, 3), _steps(b, before, 3))


def _fused_state(tc: TrainConfig) -> dict[str, Any]:
    """The state of a fused Adam after 2 steps (CPU fused, torch >= 2.4, standing in for CUDA's), as a checkpoint
    holds it (copies: a loaded optimiser updates the moment tensors it was given in place)."""
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=tc.lr, betas=tc.betas, fused=True)
    _steps(net, opt, 2)
    return copy.deepcopy({"net": net.state_dict(), "opt": opt.state_dict()})


def test_a_fused_checkpoint_resumes_on_cpu_with_the_cpu_kernel() -> None:
    """A checkpoint of a CUDA run (fused kernel) resumed on CPU steps exactly as a CPU run would, not fused."""
    tc = TrainConfig()
    saved = _fused_state(tc)
    assert saved["opt"]["param_groups"][0]["fused"] is True
    resumed, reference = _net(), _net()
    resumed.load_state_dict(saved["net"])
    reference.load_state_dict(saved["net"])
    ours = step.make_adam(resumed.parameters(), tc, "cpu")
    ours.load_state_dict(copy.deepcopy(saved["opt"]))
    plain_state = copy.deepcopy(saved["opt"])
    plain_state["param_groups"] = [{**g, "fused": None} for g in plain_state["param_groups"]]
    plain = torch.optim.Adam(reference.parameters(), lr=tc.lr, betas=tc.betas)
    plain.load_state_dict(plain_state)
    assert ours.param_groups[0]["fused"] is None
    assert torch.equal(_steps(resumed, ours, 2, seed=2), _steps(reference, plain, 2, seed=2))
    # without the hook the loaded groups would say fused=True and the CPU steps would round differently
    stray = _net()
    stray.load_state_dict(saved["net"])
    unhooked = torch.optim.Adam(stray.parameters(), lr=tc.lr, betas=tc.betas)
    unhooked.load_state_dict(copy.deepcopy(saved["opt"]))
    assert unhooked.param_groups[0]["fused"] is True


def test_an_unfused_checkpoint_resumes_with_the_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that trains fused (CUDA; here CPU's fused kernel stands in) keeps it when it resumes a checkpoint
    written by the unfused optimiser of before: the step counters go where the fused kernel reads them."""
    monkeypatch.setattr(step, "adam_kwargs", lambda device_type: {"fused": True})
    tc = TrainConfig()
    net = _net()
    old = torch.optim.Adam(net.parameters(), lr=tc.lr, betas=tc.betas)
    _steps(net, old, 2)
    resumed = _net()
    resumed.load_state_dict(net.state_dict())
    ours = step.make_adam(resumed.parameters(), tc, "cpu")
    ours.load_state_dict(copy.deepcopy(old.state_dict()))
    assert ours.param_groups[0]["fused"] is True
    counters = [s["step"] for s in ours.state.values()]
    assert all(c.dtype == torch.float32 and float(c) == 2.0 for c in counters)
    after = _steps(resumed, ours, 1, seed=2)
    assert torch.isfinite(after).all()
    assert all(float(s["step"]) == 3.0 for s in ours.state.values())


def test_accumulated_terms_are_the_float64_sums_in_term_order() -> None:
    terms = [{"a": torch.tensor(0.1), "b": torch.tensor(2.0)}, {"a": torch.tensor(0.2), "b": torch.tensor(-1.0)}]
    sums = None
    for t in terms:
        sums = step.accumulate_terms(sums, t, torch.device("cpu"))
    assert sums is not None and sums.dtype == torch.float64
    expected = [float(torch.tensor(0.1)) + float(torch.tensor(0.2)), 1.0]
    assert sums.tolist() == expected
