"""What the guard refuses and how it runs a call (hessext/_internal/guard.py), and the loss
probe giving the user's requires_grad flags back at once (hessext/_internal/contract.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals

import hessext
from hessext._internal.contract import example_loss
from hessext._internal.guard import batch_statistics, check_model, grad_mode, preserved
from hessext.testing import ce


def test_grad_mode_under_no_grad_and_inference_mode():
    @grad_mode
    def probe():
        return torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.ones(2) * 2

    for context in (torch.no_grad, torch.inference_mode):
        with context():
            enabled, inference, out = probe()
        assert enabled and not inference and not out.is_inference()


def test_backward_hooks_are_refused_with_how_to_remove_them():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    handle = model[1].register_full_backward_hook(lambda *a: None)
    with pytest.raises(
        ValueError, match=r"hessian: module '1' \(Linear\) has a backward hook.*handle.remove\(\)"
    ):
        check_model(model, "hessian")
    handle.remove()
    check_model(model, "hessian")
    handle = module_globals.register_module_full_backward_hook(lambda *a: None)
    try:
        with pytest.raises(ValueError, match="a global module backward hook is registered"):
            check_model(model, "influence")
    finally:
        handle.remove()


def test_batch_statistics_refused_unless_the_result_is_defined():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, track_running_stats=False))
    assert "module '1' (BatchNorm1d) has no running statistics" in batch_statistics(model)
    with pytest.raises(ValueError, match="examples of a batch interact"):
        check_model(model, "per_sample_grads")
    check_model(model, "hessian", examples_may_interact=True)
    assert batch_statistics(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))) is None


def test_plain_function_refused_first_by_every_entry_point():
    f = lambda x: x.sum(1, keepdim=True)  # noqa: E731
    x, y = torch.randn(4, 2), torch.randint(0, 2, (4,))
    for call in (
        lambda: hessext.hessian(f, ce, (x, y)),
        lambda: hessext.influence(f, ce, (x, y), (x, y)),
        lambda: hessext.rue(f, ce, (x, y), x),
        lambda: hessext.extrapolation_score(f, x, hessian=torch.eye(2), n_removed=1),
    ):
        with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
            call()
    with pytest.raises(TypeError, match="hessext: model must be a torch.nn.Module"):
        with preserved(f):
            pass


def test_loss_probe_gives_the_flags_back_at_once():
    """The closure check sets requires_grad on every parameter for a moment: a frozen layer is
    frozen again when the probe returns, not only when the whole call ends (influence's test
    gradients were computed over the frozen parameters too)."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    out = model(torch.randn(2, 2)).detach()
    example_loss(model, ce, out, torch.tensor([0, 1]), "probe")
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
