"""The one rule of the fast paths (hessext/_internal/modules.py): a module qualifies only with
its stock forward — exact type, forward not replaced, no hook of its own, no global hook."""

from __future__ import annotations

import types

from torch import nn
from torch.nn.modules import module as module_globals

from hessext._internal.modules import global_hooks, has_hooks, not_stock

LINEAR = (nn.Linear,)


class OwnForward(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class SameForward(nn.Linear):
    pass


def test_stock_module_qualifies():
    assert not_stock(nn.Linear(2, 3), LINEAR) is None
    assert not_stock(nn.Tanh(), (nn.ReLU, nn.Tanh)) is None


def test_subclasses_and_other_types_do_not():
    assert "subclass (OwnForward) of nn.Linear" in not_stock(OwnForward(2, 3), LINEAR)
    # even one that keeps the forward: the rule is the exact type, not a guess about the code
    assert "subclass (SameForward)" in not_stock(SameForward(2, 3), LINEAR)
    assert "is a Conv1d, not one of Linear" in not_stock(nn.Conv1d(1, 1, 1), LINEAR)


def test_replaced_forward_and_hooks_do_not():
    m = nn.Linear(2, 3)
    m.forward = types.MethodType(lambda self, x: x, m)
    assert not_stock(m, LINEAR) == "its forward is replaced on the instance"
    for register, what in (
        (lambda m: m.register_forward_hook(lambda *a: None), "a forward hook"),
        (lambda m: m.register_forward_pre_hook(lambda *a: None), "a forward pre-hook"),
        (lambda m: m.register_full_backward_hook(lambda *a: None), "a backward hook"),
        (lambda m: m.register_full_backward_pre_hook(lambda *a: None), "a backward pre-hook"),
    ):
        m = nn.Linear(2, 3)
        handle = register(m)
        assert has_hooks(m) == f"it has {what}" == not_stock(m, LINEAR)
        handle.remove()
        assert not_stock(m, LINEAR) is None


def test_global_hooks_disqualify_every_module():
    assert global_hooks() is None
    handle = module_globals.register_module_forward_hook(lambda *a: None)
    try:
        assert "a global forward hook is registered" in not_stock(nn.Linear(2, 3), LINEAR)
    finally:
        handle.remove()
    assert global_hooks() is None
