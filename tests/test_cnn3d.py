"""engine.encoders.cnn3d: the small 3-D CNN encoder registered as `cnn3d`."""

import pytest
import torch

from engine.encoders import ENCODERS
from engine.encoders.cnn3d import CNN3DConfig, CNN3DEncoder
from engine.errors import ConfigError

TINY = CNN3DConfig(channels=2, widths=(4, 8), groups=2, dim_latent=8)


def test_shape_config_round_trip_and_bad_input():
    model = CNN3DEncoder(TINY)
    assert model(torch.zeros(3, 2, 8, 16, 16)).shape == (3, 8)
    assert CNN3DConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ConfigError, match="expects"):
        model(torch.zeros(1, 3, 8, 16, 16))
    with pytest.raises(ConfigError, match="divisible"):
        CNN3DConfig(widths=(6,), groups=4)


def test_registered_and_learns_to_find_one_small_bright_spot_anywhere():
    torch.manual_seed(0)
    model = ENCODERS.build("cnn3d", TINY.to_dict())
    head = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)

    def batch(n):
        x = torch.randn(n, 2, 8, 16, 16) * 0.1
        y = torch.arange(n) % 2
        for i in range(n):
            if y[i]:  # a 2-voxel cube at a random place: a nodule of a few voxels
                d, h, w = (int(torch.randint(0, s - 2, ())) for s in (8, 16, 16))
                x[i, 0, d:d + 2, h:h + 2, w:w + 2] += 1.0
        return x, y.float()

    for _ in range(60):
        x, y = batch(16)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(model(x))[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(64)
    with torch.no_grad():
        accuracy = ((head(model(x))[:, 0] > 0).float() == y).float().mean()
    assert accuracy > 0.9
