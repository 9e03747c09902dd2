"""Twin regression: the anchor-ensemble algebra on known difference functions (closed forms),
loop consistency, chunking, seeded training with and without the loop term, clear errors."""

import pytest
import torch
from torch import nn

from hessext.interpret import loop_violation, train_twin, twin_predict
from hessext.models import TwinNet
from hessext.testing import assert_same_state, model_state, single_thread


def f(x):
    return torch.sin(3 * x[:, 0]) + x[:, 0] ** 2


class KnownTwin(nn.Module):
    """F(x1, x2) = f(x1) − f(x2) + c (c = 0: the exact difference network)."""

    def __init__(self, c=0.0):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x1, x2):
        return f(x1) - f(x2) + self.c


def _data(n=37, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, generator=gen, dtype=torch.float64), torch.linspace(
        -3, 3, 11, dtype=torch.float64
    )[:, None]


def test_exact_difference_network_gives_the_exact_value_and_no_spread():
    anchors, x = _data()
    pred = twin_predict(KnownTwin(), x, anchors, f(anchors))
    torch.testing.assert_close(pred.mean, f(x), rtol=0, atol=1e-14)
    assert pred.std.abs().max() < 1e-14


def test_offset_cancels_in_the_two_way_mean_and_becomes_the_spread():
    # forward values f(x) + c, backward values f(x) − c: mean f(x), population std |c|
    anchors, x = _data()
    pred = twin_predict(KnownTwin(0.3), x, anchors, f(anchors))
    torch.testing.assert_close(pred.mean, f(x), rtol=0, atol=1e-14)
    torch.testing.assert_close(pred.std, torch.full_like(pred.std, 0.3), rtol=0, atol=1e-14)


def test_noisy_anchors_average_out_and_their_noise_is_the_spread():
    anchors, x = _data(50)
    eps = 0.1 * torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pred = twin_predict(KnownTwin(), x, anchors, f(anchors) + eps)
    # every one of the 2n values is f(x) + ε_i
    torch.testing.assert_close(pred.mean, f(x) + eps.mean(), rtol=0, atol=1e-14)
    torch.testing.assert_close(
        pred.std, torch.full_like(pred.std, eps.std(correction=0).item()), rtol=0, atol=1e-14
    )


def test_chunks_do_not_change_the_answer():
    anchors, x = _data()
    model = TwinNet(1, (8,), seed=0).double()
    y = f(anchors)
    whole = twin_predict(model, x, anchors, y)
    pieces = twin_predict(model, x, anchors, y, max_pairs=40)  # one test point per chunk
    torch.testing.assert_close(pieces.mean, whole.mean, rtol=0, atol=1e-14)
    torch.testing.assert_close(pieces.std, whole.std, rtol=0, atol=1e-14)


def test_loop_violation():
    a, b = _data()
    c = a.flip(0)
    assert loop_violation(KnownTwin(), a, a.roll(1, 0), c).abs().max() < 1e-14
    torch.testing.assert_close(
        loop_violation(KnownTwin(0.2), a, a.roll(1, 0), c), torch.full((37,), 0.6).double()
    )


def test_training_is_seeded_fits_a_line_and_the_loop_term_admits_unlabelled_points():
    gen = torch.Generator().manual_seed(0)
    x = 2 * torch.rand(64, 1, generator=gen) - 1
    y = 2 * x[:, 0] + 1
    rng = torch.get_rng_state()
    m1, m2 = TwinNet(1, (16,), seed=1), TwinNet(1, (16,), seed=1)
    with single_thread():
        h1 = train_twin(m1, x, y, steps=300, lr=1e-2, batch_size=32, seed=2)
        h2 = train_twin(m2, x, y, steps=300, lr=1e-2, batch_size=32, seed=2)
    assert torch.equal(torch.get_rng_state(), rng) and h1 == h2 and len(h1) == 300
    grid = torch.linspace(-1, 1, 21)[:, None]
    pred = twin_predict(m1, grid, x, y)
    assert (pred.mean - (2 * grid[:, 0] + 1)).abs().max() < 0.1
    # with the loop term and unlabelled points the loss has a second part: a different run
    m3 = TwinNet(1, (16,), seed=1)
    with single_thread():
        h3 = train_twin(
            m3, x, y, steps=300, lr=1e-2, batch_size=32, seed=2, unlabelled=x + 0.5, loop_weight=1.0
        )
    assert h3 != h1 and h3[-1] < h3[0]


def test_prediction_leaves_the_model_as_it_was():
    anchors, x = _data()
    model = TwinNet(1, (8,), seed=0).double()
    model.train()
    state = model_state(model)
    with torch.no_grad():
        twin_predict(model, x, anchors, f(anchors))
        loop_violation(model, x, x, x)
    assert_same_state(model, state)
    assert model.training


def test_bad_input():
    anchors, x = _data()
    y = f(anchors)
    model = TwinNet(1, (8,), seed=0)
    with pytest.raises(ValueError, match="pass loop_weight > 0"):
        train_twin(model, anchors, y, steps=1, unlabelled=x)
    with pytest.raises(ValueError, match="loop_weight must be a number >= 0"):
        train_twin(model, anchors, y, steps=1, loop_weight=-1.0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_twin(model, anchors, y, steps=0)
    with pytest.raises(ValueError, match="targets has batch size 36 but inputs has 37"):
        train_twin(model, anchors, y[:-1], steps=1)
    with pytest.raises(ValueError, match="the targets must be scalars"):
        twin_predict(model, x, anchors, torch.zeros(37, 2))
    with pytest.raises(TypeError, match="the targets must be float32 or float64"):
        twin_predict(model, x, anchors, torch.zeros(37, dtype=torch.long))
    with pytest.raises(ValueError, match="feature shape"):
        twin_predict(model, torch.zeros(3, 2), anchors, y)
    with pytest.raises(ValueError, match=r"must return F \[N\]"):
        twin_predict(nn.Bilinear(1, 1, 2), x, anchors, y)
    with pytest.raises(ValueError, match="one shape"):
        loop_violation(model, x, x[:3], x)
