"""over_examples (hessext/_internal/per_example.py): vmap where torch.func can batch the model,
one example at a time (the same numbers) where it cannot, and it says which."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad

from hessext._internal.per_example import VMAP, Batched, over_examples


def _per_example_grads(model, x, state):
    theta = {k: v.detach() for k, v in model.named_parameters()}

    def loss(theta, xi):
        return functional_call(model, theta, (xi.unsqueeze(0),)).square().sum()

    return over_examples(grad(loss), (None, 0), theta, x, state=state), theta, loss


def _loop_truth(theta, loss, x):
    rows = [grad(loss)(theta, xi) for xi in x]
    return {k: torch.stack([r[k] for r in rows]) for k in theta}


def test_vmap_where_it_batches():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double(), torch.randn(5, 3).double()
    state = Batched()
    got, theta, loss = _per_example_grads(model, x, state)
    assert state.how == VMAP and not state.looping
    want = _loop_truth(theta, loss, x)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-14)


class Last(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 2, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0][:, -1]


def test_one_example_at_a_time_where_vmap_cannot():
    """nn.LSTM has no vmap batching rule: the loop gives every example's gradient, says why,
    and later calls with the same state skip the failing vmap."""
    torch.manual_seed(0)
    model, x = Last().double(), torch.randn(4, 5, 3).double()
    state = Batched()
    got, theta, loss = _per_example_grads(model, x, state)
    assert state.looping and state.how.startswith("one example at a time (torch.func.vmap cannot batch")
    want = _loop_truth(theta, loss, x)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-14)
    how = state.how
    over_examples(grad(loss), (None, 0), theta, x[:2], state=state)
    assert state.how == how
