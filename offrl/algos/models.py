"""Networks from the ``model`` config: an image encoder when observations are images,
then the ``fcnet_hiddens`` MLP.

Every learner feeds observations as preprocessed rows (see ``offrl/preprocess.py``),
flattened or not; for an image space the first module (:class:`ImageEncoder`) puts
each row back into (H, W, C), scales uint8 pixels to [0, 1] and runs the
convolutions of ``model.conv_filters`` (RLlib's key: ``[[out_channels, [kh, kw],
stride], ...]``) with ``model.conv_activation``. Each convolution pads by
``(k - 1) // 2`` ("same"-like), so the default filters work for any H x W >= 8 x 8;
RLlib's own defaults exist only for a fixed list of frame sizes (84x84, 64x64, 42x42, ...), with
its last layer a "valid" convolution down to 1 x 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from offrl.algos.base import _ACTIVATIONS, mlp
from offrl.errors import ConfigError
from offrl.preprocess import flat_size, is_image

DEFAULT_CONV_FILTERS = [[16, [4, 4], 2], [32, [4, 4], 2], [64, [3, 3], 2]]
DEFAULT_CONV_ACTIVATION = "relu"


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    """Output length of one padded convolution: floor((size + 2p - k) / s) + 1, p = (k-1)//2."""
    return (size + 2 * ((kernel - 1) // 2) - kernel) // stride + 1


class ImageEncoder(nn.Module):
    """(B, H*W*C) or (B, H, W, C) pixels -> (B, features) by ``conv_filters``, then flatten."""

    def __init__(
        self, shape: tuple[int, int, int], filters: Sequence, activation: str, scale: float
    ) -> None:
        super().__init__()
        self.shape = shape
        self.scale = scale  # 1/255 for uint8 frames, 1 otherwise
        h, w, channels = shape
        layers: list[nn.Module] = []
        for out_ch, (kh, kw), stride in filters:
            layers.append(
                nn.Conv2d(channels, out_ch, (kh, kw), stride, ((kh - 1) // 2, (kw - 1) // 2))
            )
            if activation != "linear":
                layers.append(_ACTIVATIONS[activation]())
            h, w, channels = conv_out_size(h, kh, stride), conv_out_size(w, kw, stride), out_ch
            if h < 1 or w < 1:
                raise ConfigError(
                    f"config key 'model.conv_filters': {list(filters)} shrinks the {shape[0]}x"
                    f"{shape[1]} image to nothing; use fewer or smaller-stride filters"
                )
        self.convs = nn.Sequential(*layers)
        self.out_dim = h * w * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, c = self.shape
        x = x.reshape(len(x), h, w, c).permute(0, 3, 1, 2).float()
        if self.scale != 1.0:
            x = x * self.scale
        return self.convs(x).flatten(1)


def trunk(obs_space: gym.Space, model: dict) -> tuple[list[nn.Module], int]:
    """(modules that read observations, their output width): an ImageEncoder or nothing."""
    if not is_image(obs_space):
        return [], flat_size(obs_space)
    filters = model.get("conv_filters") or DEFAULT_CONV_FILTERS
    act = model.get("conv_activation", DEFAULT_CONV_ACTIVATION)
    scale = 1.0 / 255.0 if obs_space.dtype == np.uint8 else 1.0
    enc = ImageEncoder(tuple(obs_space.shape), filters, act, scale)  # type: ignore[arg-type]
    return [enc], enc.out_dim


def network(obs_space: gym.Space, model: dict, out_dim: int) -> nn.Sequential:
    """Encoder (images only), then ``fcnet_hiddens`` with ``fcnet_activation``, then ``out_dim``."""
    modules, width = trunk(obs_space, model)
    head = mlp(
        width,
        model.get("fcnet_hiddens", [256, 256]),
        out_dim,
        model.get("fcnet_activation", "tanh"),
    )
    return nn.Sequential(*modules, *head)


def is_mlp(net: nn.Sequential) -> bool:
    """True when ``net`` is only Linear layers and activations (the fast inference path)."""
    return all(isinstance(m, nn.Linear | nn.Tanh | nn.ReLU | nn.ELU | nn.SiLU) for m in net)
