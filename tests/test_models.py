"""Networks from the ``model`` config: the image encoder and its default filters."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from offrl.algos.models import ImageEncoder, conv_out_size, is_mlp, network
from offrl.errors import ConfigError

MODEL = {"fcnet_hiddens": [16], "fcnet_activation": "tanh"}


def test_conv_out_size_padded() -> None:
    # floor((size + 2 * ((k - 1) // 2) - k) / s) + 1
    assert conv_out_size(84, 4, 2) == 42
    assert conv_out_size(8, 4, 2) == 4
    assert conv_out_size(2, 3, 2) == 1
    assert conv_out_size(84, 8, 4) == 21


@pytest.mark.parametrize(
    ("h", "w", "features"), [(8, 8, 64), (10, 12, 64 * 1 * 2), (84, 84, 64 * 11 * 11)]
)
def test_default_filters_work_for_any_size_from_8x8(h: int, w: int, features: int) -> None:
    space = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
    net = network(space, MODEL, 5)
    assert isinstance(net[0], ImageEncoder) and net[0].out_dim == features
    frames = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8)
    assert net(frames).shape == (2, 5)
    assert net(frames.reshape(2, -1).float()).shape == (2, 5)  # flattened rows too
    assert not is_mlp(net)


def test_uint8_frames_scaled_to_unit_range_float_frames_not() -> None:
    filters = [[1, [1, 1], 1]]
    enc = ImageEncoder((2, 2, 1), filters, "linear", 1.0 / 255.0)
    conv = enc.convs[0]
    assert isinstance(conv, nn.Conv2d)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    x = torch.full((1, 2, 2, 1), 255, dtype=torch.uint8)
    assert enc(x).tolist() == [[1.0, 1.0, 1.0, 1.0]]
    enc.scale = 1.0
    assert enc(x).tolist() == [[255.0] * 4]


def test_conv_filters_and_activation_from_config() -> None:
    space = gym.spaces.Box(0.0, 1.0, (16, 16, 2), np.float32)
    model = {**MODEL, "conv_filters": [[4, [3, 3], 1], [8, [3, 3], 4]], "conv_activation": "elu"}
    enc = network(space, model, 2)[0]
    assert [m.out_channels for m in enc.convs if isinstance(m, nn.Conv2d)] == [4, 8]
    assert any(isinstance(m, nn.ELU) for m in enc.convs)
    assert enc.out_dim == 8 * 4 * 4


def test_filters_that_shrink_the_image_to_nothing_are_a_config_error() -> None:
    space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    model = {**MODEL, "conv_filters": [[4, [8, 8], 8], [4, [8, 8], 8], [4, [3, 3], 8]]}
    with pytest.raises(ConfigError, match="shrinks the 8x8 image to nothing"):
        network(space, model, 2)


def test_vector_observations_get_a_plain_mlp() -> None:
    net = network(gym.spaces.Box(-1, 1, (3, 2)), MODEL, 4)
    assert is_mlp(net) and net[0].in_features == 6
