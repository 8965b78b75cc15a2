"""The insider's generator and its training against the global model (Hitaj et al., CCS 2017, §4.3).

The attacker has no discriminator of its own: the global model it receives every round is
the discriminator. The generator ``G`` is trained so that the global model labels ``G(z)`` as
the victim class, i.e. it minimises the cross-entropy ``CE(f(G(z)), victim)`` with the global
model ``f`` frozen (the generator step of the GAN game, Eq. (1) of Goodfellow et al. with
``D = f``'s victim output). The discriminator step is the attacker's ordinary local training on
its own images plus ``G(z)`` labelled "fake": it teaches the global model, and through it every
victim, to tell the fakes from the real victim class, which forces the victims to reveal more
detail of that class in their next updates.

The generator is DCGAN-shaped (Radford et al. 2016): a linear map of ``z`` to a small feature
map, then transposed convolutions that double the resolution, BatchNorm and ReLU, and a
sigmoid output in [0, 1] (the scale of the training loop's images), cropped to the image size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LATENT_SIZE = 100


class Generator(nn.Module):
    """DCGAN generator for ``(C, H, W)`` images: ``z`` (``LATENT_SIZE``) -> image in [0, 1].

    Two upsampling stages for images up to 32 pixels on a side, three above (the faces); the
    output is cropped to ``H x W`` when the size is not a multiple of the upsampling factor.
    """

    def __init__(self, image_shape: tuple[int, int, int], width: int = 128) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        self.image_shape = image_shape
        stages = 2 if min(height, width_px) <= 32 else 3
        factor = 2**stages
        self.base = (math.ceil(height / factor), math.ceil(width_px / factor))
        self.project = nn.Sequential(
            nn.Linear(LATENT_SIZE, width * self.base[0] * self.base[1]),
            nn.BatchNorm1d(width * self.base[0] * self.base[1]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        in_channels = width
        for stage in range(stages):
            last = stage == stages - 1
            out_channels = channels if last else max(in_channels // 2, 32)
            layers.append(nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=last))
            layers += [nn.Sigmoid()] if last else [nn.BatchNorm2d(out_channels), nn.ReLU()]
            in_channels = out_channels
        self.upsample = nn.Sequential(*layers)
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        features = self.project(z).view(-1, self.width, *self.base)
        _, height, width = self.image_shape
        return self.upsample(features)[:, :, :height, :width]

    def sample(self, count: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """``count`` images as ``uint8`` ``(N, C, H, W)`` on the CPU (the data sets' format), in eval mode."""
        self.eval()
        with torch.no_grad():
            z = torch.randn(count, LATENT_SIZE, generator=generator).to(device)
            images = self(z)
        return images.mul(255).round().to(torch.uint8).cpu()


def train_generator(
    generator: Generator,
    model: nn.Module,
    victim_class: int,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: torch.device,
    jitter: int = 0,
) -> float:
    """``steps`` Adam steps on ``CE(model(G(z)), victim_class)`` with ``model`` frozen; return the last loss.

    The model is put in eval mode and its parameters are left untouched (their gradients are
    not even computed); only the generator learns. With ``jitter`` > 0 every batch is shifted
    by a random offset of up to ``jitter`` pixels before the model sees it (the jitter of
    model-inversion attacks, e.g. Yin et al., CVPR 2020): a pattern that fools the model only
    at one position is not rewarded, a shape of the class is.
    """
    generator.to(device).train()
    model.to(device).eval()
    frozen = [parameter.requires_grad for parameter in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate, betas=(0.5, 0.999))
    noise = torch.Generator().manual_seed(seed)
    target = torch.full((batch_size,), victim_class, dtype=torch.int64, device=device)
    criterion = nn.CrossEntropyLoss()
    loss = torch.zeros(())
    try:
        for _ in range(steps):
            z = torch.randn(batch_size, LATENT_SIZE, generator=noise).to(device)
            optimizer.zero_grad(set_to_none=True)
            images = generator(z)
            if jitter > 0:
                dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=noise).tolist()
                images = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
            loss = criterion(model(images), target)
            loss.backward()
            optimizer.step()
    finally:
        for parameter, requires_grad in zip(model.parameters(), frozen, strict=True):
            parameter.requires_grad_(requires_grad)
    return float(loss.detach())
