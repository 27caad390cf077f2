"""Small-network fast path: forward and backward of torch MLPs done with numpy.

At CartPole sizes (a few thousand weights, batches of 128) a torch update is almost
all per-operation overhead: autograd, dispatch and the optimizer's bookkeeping cost
many times the arithmetic (figures in benchmarks/README.md). This module keeps torch as the owner of
the model (construction, initialisation, ``state_dict`` and checkpoints) but moves
every parameter into **one flat float32 array** that the torch parameters view, so
numpy can run the forward pass, the hand-written backward pass, gradient clipping,
Adam and Polyak averaging in a handful of vectorised calls on the same memory.

Only ``nn.Linear`` layers followed by ``relu``, ``tanh`` or nothing are supported;
:func:`plan_sequential` returns None for anything else and the caller falls back to
autograd. ``tests/test_fastmlp.py`` checks every gradient against autograd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


def flatten_parameters(module: nn.Module) -> tuple[np.ndarray, dict[int, slice]]:
    """Move every parameter of ``module`` into one flat float32 array and return it.

    Each parameter's ``.data`` becomes a view of its slice, so torch (``forward``,
    ``state_dict``, ``load_state_dict``) and numpy read and write the same memory.
    Returns the array and each parameter's slice, keyed by ``id(parameter)``.
    """
    params = list(module.parameters())
    flat = np.empty(sum(p.numel() for p in params), dtype=np.float32)
    where: dict[int, slice] = {}
    offset = 0
    for p in params:
        n = p.numel()
        flat[offset : offset + n] = p.detach().cpu().numpy().ravel()
        p.data = torch.from_numpy(flat[offset : offset + n]).view(p.shape)
        where[id(p)] = slice(offset, offset + n)
        offset += n
    return flat, where


@dataclass
class DenseLayer:
    """``y = act(x @ W.T + b)``, with views of the weights and of their gradients."""

    weight: np.ndarray  # (out, in), a view into the flat parameters
    bias: np.ndarray  # (out,)
    grad_weight: np.ndarray  # same shapes, views into the flat gradient
    grad_bias: np.ndarray
    activation: str  # "relu", "tanh" or "linear"


@dataclass
class MLPPlan:
    """The dense layers of one ``nn.Sequential``, in order."""

    layers: list[DenseLayer] = field(default_factory=list)


_ACTIVATION_NAMES = {nn.ReLU: "relu", nn.Tanh: "tanh"}


def plan_sequential(
    seq: nn.Sequential, where: dict[int, slice], flat: np.ndarray, grad: np.ndarray
) -> MLPPlan | None:
    """Dense layers of ``seq`` as views into ``flat``/``grad``; None if unsupported."""
    plan = MLPPlan()
    for module in seq:
        if isinstance(module, nn.Linear):
            if module.bias is None:
                return None
            w, b = where[id(module.weight)], where[id(module.bias)]
            shape = tuple(module.weight.shape)
            plan.layers.append(
                DenseLayer(
                    flat[w].reshape(shape), flat[b], grad[w].reshape(shape), grad[b], "linear"
                )
            )
        elif type(module) in _ACTIVATION_NAMES and plan.layers:
            if plan.layers[-1].activation != "linear":
                return None
            plan.layers[-1].activation = _ACTIVATION_NAMES[type(module)]
        else:
            return None
    return plan


def tanh_(z: np.ndarray) -> None:
    """tanh in place, as 2 * sigmoid(2z) - 1 with torch on the same memory.

    Cheaper than ``np.tanh`` at the batch sizes learners use; the absolute error is
    ~1e-7 (float32 rounding).
    """
    torch.from_numpy(z).mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


def forward(plan: MLPPlan, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for input ``x`` (B, in): ``[x, h1, ..., out]``."""
    outs = [x]
    for layer in plan.layers:
        z = x @ layer.weight.T
        z += layer.bias
        if layer.activation == "relu":
            np.maximum(z, 0.0, out=z)
        elif layer.activation == "tanh":
            tanh_(z)
        outs.append(z)
        x = z
    return outs


def backward(plan: MLPPlan, outs: list[np.ndarray], grad_out: np.ndarray, rows: int) -> np.ndarray:
    """Write parameter gradients for the first ``rows`` rows of a :func:`forward` pass.

    ``grad_out`` (rows, out) is dLoss/d(output). Gradients are *assigned* (not added)
    into the plan's gradient views. Returns dLoss/d(input), (rows, in).
    """
    g = grad_out
    for i in range(len(plan.layers) - 1, -1, -1):
        layer = plan.layers[i]
        y = outs[i + 1][:rows]
        if layer.activation == "relu":
            g = g * (y > 0)
        elif layer.activation == "tanh":
            g = g * (1.0 - y * y)
        np.matmul(g.T, outs[i][:rows], out=layer.grad_weight)
        np.sum(g, axis=0, out=layer.grad_bias)
        g = g @ layer.weight
    return g


def grad_norm(grad: np.ndarray) -> float:
    """The 2-norm of a flat gradient (inf when its float32 square overflows)."""
    with np.errstate(over="ignore"):
        return float(np.sqrt(np.dot(grad, grad)))


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale ``grad`` in place so its 2-norm is at most ``max_norm`` (torch's formula)."""
    norm = grad_norm(grad)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        grad *= np.float32(coef)
    return norm


@dataclass
class Adam:
    """Adam (Kingma & Ba 2015) on a flat array, the same arithmetic as ``torch.optim.Adam``."""

    size: int
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    step_count: int = 0
    exp_avg: np.ndarray = field(init=False)
    exp_avg_sq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.exp_avg = np.zeros(self.size, dtype=np.float32)
        self.exp_avg_sq = np.zeros(self.size, dtype=np.float32)

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """One update of ``params`` in place."""
        self.step_count += 1
        t = self.step_count
        self.exp_avg *= np.float32(self.beta1)
        self.exp_avg += np.float32(1.0 - self.beta1) * grad
        self.exp_avg_sq *= np.float32(self.beta2)
        self.exp_avg_sq += np.float32(1.0 - self.beta2) * grad * grad
        bias1 = 1.0 - self.beta1**t
        bias2_sqrt = float(np.sqrt(1.0 - self.beta2**t))
        denom = np.sqrt(self.exp_avg_sq)
        denom /= np.float32(bias2_sqrt)
        denom += np.float32(self.eps)
        params -= np.float32(lr / bias1) * (self.exp_avg / denom)

    def get_state(self) -> dict[str, Any]:
        """Moments as tensors (loadable with ``weights_only=True``) and the step count."""
        return {
            "step": self.step_count,
            "exp_avg": torch.from_numpy(self.exp_avg.copy()),
            "exp_avg_sq": torch.from_numpy(self.exp_avg_sq.copy()),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned."""
        self.step_count = int(state["step"])
        self.exp_avg[:] = state["exp_avg"].numpy()
        self.exp_avg_sq[:] = state["exp_avg_sq"].numpy()

    def checkpoint(self) -> dict[str, Any]:
        """This optimizer's entry in a learner checkpoint."""
        return {"numpy_adam": self.get_state()}

    def restore(self, entry: dict[str, Any], sizes: list[int] | None = None) -> None:
        """Restore a checkpoint's optimizer entry: :meth:`checkpoint`'s, or a
        ``torch.optim.Adam`` state dict over the same parameters (older checkpoints;
        ``sizes``, the parameters' sizes in order, fill in any that never stepped)."""
        if "numpy_adam" in entry:
            state = entry["numpy_adam"]
        else:
            state = adam_state_from_torch(entry, sizes)
        if state:  # a torch Adam that never stepped has no moments yet
            self.set_state(state)


def adam_state_from_torch(state: dict[str, Any], sizes: list[int] | None = None) -> dict[str, Any]:
    """A ``torch.optim.Adam`` state dict as :class:`Adam` state (parameter order kept).

    torch keeps no state for a parameter that never had a gradient; given ``sizes`` (every
    parameter's size, in order), such a parameter gets zero moments, as a fresh Adam has.
    """
    per_param = state["state"]
    if not per_param:
        return {}
    present = [per_param[k] for k in sorted(per_param)]
    if sizes is None:
        sizes = [s["exp_avg"].numel() for s in present]
        keys = sorted(per_param)
    else:
        keys = list(range(len(sizes)))

    def moments(name: str) -> torch.Tensor:
        return torch.cat(
            [
                per_param[k][name].reshape(-1) if k in per_param else torch.zeros(n)
                for k, n in zip(keys, sizes, strict=True)
            ]
        )

    return {
        "step": int(present[0]["step"]),
        "exp_avg": moments("exp_avg"),
        "exp_avg_sq": moments("exp_avg_sq"),
    }


class FlatBackend:
    """What every learner backend shares: the parameters in one flat array, the gradient
    beside it, gradient clipping and one Adam over both; so one checkpoint format.

    A backend (numpy for small MLPs, torch autograd for anything) only supplies
    ``forward`` and ``backward``; ``backward`` leaves dLoss/d(parameters) in
    :attr:`grad`, and :meth:`step` is the same update whichever backend wrote it.
    """

    def __init__(self, module: nn.Module, *, eps: float = 1e-8) -> None:
        self.module = module
        self.flat, self.where = flatten_parameters(module)
        self.grad = np.zeros_like(self.flat)
        self.adam = Adam(len(self.flat), eps=eps)

    def step(self, lr: float, max_norm: float | None, frozen: slice | None = None) -> float:
        """Clip :attr:`grad` to ``max_norm``, one Adam step; the gradient's norm before
        clipping (nan, not computed, when ``max_norm`` is None: no clipping).

        ``frozen``: parameters that had no gradient this step keep their values and their
        Adam moments, as ``torch.optim.Adam`` leaves a parameter whose ``.grad`` is None
        (the step count is shared, so their bias correction moves on).
        """
        norm = float("nan") if max_norm is None else clip_grad_norm(self.grad, max_norm)
        if frozen is None:
            self.adam.step(self.flat, self.grad, lr)
            return norm
        kept = [a[frozen].copy() for a in (self.flat, self.adam.exp_avg, self.adam.exp_avg_sq)]
        self.adam.step(self.flat, self.grad, lr)
        for a, old in zip((self.flat, self.adam.exp_avg, self.adam.exp_avg_sq), kept, strict=True):
            a[frozen] = old
        return norm

    def grads_from_torch(self) -> None:
        """Copy autograd's ``.grad`` of every parameter into :attr:`grad` (0 where None)."""
        for p in self.module.parameters():
            where = self.where[id(p)]
            if p.grad is None:
                self.grad[where] = 0.0
            else:
                self.grad[where] = p.grad.numpy().ravel()
                p.grad = None

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's checkpoint entry (see :meth:`Adam.checkpoint`)."""
        return self.adam.checkpoint()

    def load_state_dict(self, entry: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, or an older checkpoint's ``torch.optim.Adam`` state."""
        self.adam.restore(entry, [p.numel() for p in self.module.parameters()])


class TorchMLP(FlatBackend):
    """One network's forward and backward by torch autograd (any layer type)."""

    def __init__(self, net: nn.Module, *, eps: float = 1e-8) -> None:
        super().__init__(net, eps=eps)
        self._out: torch.Tensor | None = None

    @staticmethod
    def _tensor(x: np.ndarray) -> torch.Tensor:
        """The network's input; a backend whose inputs need converting overrides it."""
        return torch.from_numpy(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Outputs (B, out) for float32 inputs (B, in), remembered for :meth:`backward`."""
        self._out = self.module(self._tensor(x))
        return self._out.detach().numpy()

    def backward(self, grad_out: np.ndarray) -> None:
        """dLoss/d(parameters) into :attr:`grad`, for dLoss/d(output) of the first rows."""
        assert self._out is not None, "backward() without forward()"
        self._out[: len(grad_out)].backward(torch.from_numpy(grad_out))
        self._out = None
        self.grads_from_torch()


class NumpyMLP(TorchMLP):
    """:class:`TorchMLP` with forward and backward done by numpy on the same memory."""

    def __init__(self, base: TorchMLP, plan: MLPPlan) -> None:
        vars(self).update(vars(base))
        self.plan = plan
        self._outs: list[np.ndarray] = []

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._outs = forward(self.plan, x)
        return self._outs[-1]

    def backward(self, grad_out: np.ndarray) -> None:
        backward(self.plan, self._outs, grad_out, len(grad_out))


def mlp_backend(net: nn.Sequential, *, eps: float = 1e-8) -> TorchMLP:
    """:class:`NumpyMLP` when every layer of ``net`` has a numpy plan, else :class:`TorchMLP`."""
    backend = TorchMLP(net, eps=eps)
    plan = plan_sequential(net, backend.where, backend.flat, backend.grad)
    return backend if plan is None else NumpyMLP(backend, plan)
