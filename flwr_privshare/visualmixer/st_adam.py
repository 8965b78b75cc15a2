"""ST-Adam, the optimizer of VisualMixer (Xu et al., NDSS 2024, Section IV-E).

ST-Adam is Adam without bias correction plus weight decay and a momentum term on the
update, meant to train stably on shuffled images:

    g   <- g + lambda * theta                    (weight decay)
    m   <- beta1 * m + (1 - beta1) * g
    v   <- beta2 * v + (1 - beta2) * g^2
    u   =  m / (sqrt(v) + eps)                   (no bias correction)
    b   <- mu * b + u                            (momentum on the update)
    theta <- theta - lr * b

With ``weight_decay = momentum = 0`` it is Adam without bias correction. The released
VisualMixer code does not contain it; this follows the paper's text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class STAdam(torch.optim.Optimizer):
    """ST-Adam (Section IV-E of VisualMixer).

    Args:
        params: parameters or parameter groups.
        lr: learning rate ``eta``.
        betas: ``(beta1, beta2)`` decay rates of the first and second moments.
        eps: added to ``sqrt(v)``.
        weight_decay: ``lambda``, L2 penalty added to the gradient.
        momentum: ``mu``, momentum of the update ``u``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
    ) -> None:
        if lr <= 0.0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps <= 0.0:
            raise ValueError(f"eps must be positive, got {eps}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "momentum": momentum}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one ST-Adam step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"]:
                    grad = grad.add(param, alpha=group["weight_decay"])
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                    state["update_buffer"] = torch.zeros_like(param)
                exp_avg, exp_avg_sq, buffer = state["exp_avg"], state["exp_avg_sq"], state["update_buffer"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                update = exp_avg / (exp_avg_sq.sqrt() + group["eps"])
                buffer.mul_(group["momentum"]).add_(update)
                param.add_(buffer, alpha=-group["lr"])
        return loss
