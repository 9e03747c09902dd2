"""The seeded Adam loop the pair-network trainers share (hessext.interpret.siamese, .twin).

The caller supplies the loss of one mini-batch as a closure (it draws its batch from its own
seeded generator); this loop owns the optimiser, the learning-rate schedule, the model's
train/eval mode and the global RNG (forked and seeded, so that dropout inside the model is
reproducible and the caller's random state is left as it was).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hessext._internal.guard import check_model
from hessext._internal.progress import progress_bar

SCHEDULES = ("onecycle", "cosine")


def check_positive_int(value, name: str, fn: str) -> int:
    """``value`` if it is an int >= 1; ValueError naming ``fn`` and ``name`` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return value


def model_dtype(model: nn.Module, fn: str) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's first floating-point parameter (inputs are cast
    to them)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    raise ValueError(f"{fn}: the model has no floating-point parameters")


def check_options(fn: str, *, lr, batch_size, seed) -> None:
    """The options every trainer takes: lr > 0, batch_size >= 1, an int seed."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"{fn}: lr must be a number > 0, got {lr!r}")
    check_positive_int(batch_size, "batch_size", fn)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"{fn}: seed must be an int, got {type(seed).__name__}")


def adam_loop(
    model: nn.Module,
    batch_loss: Callable[[], torch.Tensor],
    *,
    steps: int,
    lr: float,
    seed: int,
    schedule: str,
    progress: bool | None,
    desc: str,
) -> list[float]:
    """``steps`` Adam steps on ``batch_loss()`` (a scalar), learning rate ``lr`` under
    ``schedule``: "onecycle" (warm-up to lr over the first 30 %, then cosine annealing) or
    "cosine" (from lr down to 0). Trains ``model`` in place; returns the loss of every step.
    The model's train/eval mode is restored at the end."""
    check_model(model, desc)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: the model has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr)
    sched: torch.optim.lr_scheduler.LRScheduler
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    else:
        raise ValueError(f"{desc}: schedule must be one of {SCHEDULES}, got {schedule!r}")
    history: list[float] = []
    was_training = model.training
    devices = [params[0].device] if params[0].device.type == "cuda" else []
    bar = progress_bar(total=steps, desc=desc, unit="step", progress=progress)
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(seed)
        model.train()
        try:
            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = batch_loss()
                loss.backward()
                opt.step()
                sched.step()
                history.append(float(loss.detach()))
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{history[-1]:.4g}", refresh=False)
        finally:
            bar.close()
            model.train(was_training)
    return history
