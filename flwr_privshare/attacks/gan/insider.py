"""The malicious client of the GAN attack (Hitaj et al., CCS 2017, §5): what it does on its own node.

The attacker follows the protocol: it receives the global model, trains locally with the
run's protections and uploads an ordinary update with the same records, keys, shapes and
dtypes as every client. Only what it trains on differs. From ``gan-start-round`` on it first
trains its generator against the received global model (the discriminator, see
:mod:`.generator`), then adds ``gan-fake-images`` samples of ``G(z)``, labelled with the
"fake" class, to its own partition, which holds no image of the victim class. The generator
stays in the attacker's ``context.state``.

The auditor (the simulation's measurement, not part of the attack) asks the attacker's node
for samples of ``G(z)`` after every round through a ``query`` message (:func:`answer_audit`);
a real attacker would simply look at them.
"""

from __future__ import annotations

from logging import DEBUG
from typing import cast

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import log
from torch import nn

from ...config import RunConfig
from ...data import ImageDataset
from ...seeding import derive_seed, seeded
from .generator import Generator, train_generator
from .section import GanSection

GENERATOR_STATE = "gan-generator"  # context.state records of the attacker's generator (they never leave the node)
GENERATOR_SHAPE = "gan-generator-shape"
SAMPLES_KEY = "gan-samples"  # the audit reply's array record: "images" (uint8)
AUDIT_CONFIG_KEY = "gan-audit"  # the audit query's config record: "samples" and "seed"


def model_outputs_of(run: RunConfig, num_classes: int) -> int:
    """The global model's outputs in ``run``: one more than the classes when a GAN attacker is in it."""
    return run[GanSection].model_outputs(num_classes) if GanSection in run else num_classes


def without_class(data: ImageDataset, label: int) -> ImageDataset:
    """``data`` without its images of class ``label``."""
    return data.subset(torch.nonzero(data.labels != label).flatten())


def partition_under_attack(gan: GanSection, data: ImageDataset, partition_id: int) -> ImageDataset:
    """The partition a client holds in a GAN-attack run: the attacker's (and, in the control run,
    everyone's) has no image of the victim class."""
    if gan.active and (gan.gan_control or partition_id == gan.gan_attacker):
        return without_class(data, gan.gan_victim_class)
    return data


def attacks_now(gan: GanSection, partition_id: int, server_round: int) -> bool:
    """Whether this client is the attacker and the attack has started."""
    return gan.active and partition_id == gan.gan_attacker and server_round >= gan.gan_start_round


def _generator(context: Context, image_shape: tuple[int, int, int], seed: int) -> Generator:
    """The attacker's generator from ``context.state``, or a fresh one built from the run seed."""
    with seeded(derive_seed(seed, "gan-generator")):
        generator = Generator(image_shape)
    if GENERATOR_STATE in context.state:
        generator.load_state_dict(context.state.array_records[GENERATOR_STATE].to_torch_state_dict())
    return generator


def with_generated_fakes(
    run: RunConfig,
    model: nn.Module,
    data: ImageDataset,
    context: Context,
    *,
    seed: int,
    server_round: int,
    device: torch.device,
) -> ImageDataset:
    """Train the generator against ``model`` (the received global model), keep it, and return the
    attacker's training data: ``data`` plus ``gan-fake-images`` samples labelled "fake" (the
    class after the data set's last).

    The generator's loss is logged on the attacker's node only: a reply metric that no other
    client sends would give the attacker away.
    """
    gan = run[GanSection]
    generator = _generator(context, data.image_shape, seed)
    loss = train_generator(
        generator,
        model,
        gan.gan_victim_class,
        steps=gan.gan_generator_steps,
        batch_size=gan.gan_batch_size,
        learning_rate=gan.gan_learning_rate,
        seed=derive_seed(seed, "gan-noise", server_round),
        device=device,
        jitter=gan.gan_jitter,
    )
    context.state[GENERATOR_STATE] = ArrayRecord(generator.cpu().state_dict())
    context.state[GENERATOR_SHAPE] = ConfigRecord({"image-shape": list(data.image_shape)})
    noise = torch.Generator().manual_seed(derive_seed(seed, "gan-fakes", server_round))
    fakes = generator.sample(gan.gan_fake_images, noise, torch.device("cpu"))
    fake_labels = torch.full((len(fakes),), data.num_classes, dtype=torch.int64)
    log(DEBUG, "GAN attacker, round %d: generator loss %.4f", server_round, loss)
    return ImageDataset(torch.cat([data.images, fakes]), torch.cat([data.labels, fake_labels]), data.num_classes)


def answer_audit(msg: Message, context: Context) -> Message:
    """Reply to the auditor's query with samples of ``G(z)``; an empty reply from any other node
    or before the attacker has a generator."""
    if GENERATOR_STATE not in context.state:
        return Message(content=RecordDict(), reply_to=msg)
    settings = msg.content.config_records[AUDIT_CONFIG_KEY]
    channels, height, width = cast(list[int], context.state.config_records[GENERATOR_SHAPE]["image-shape"])
    generator = _generator(context, (channels, height, width), seed=0)
    noise = torch.Generator().manual_seed(int(cast(int, settings["seed"])))
    images = generator.sample(int(cast(int, settings["samples"])), noise, torch.device("cpu"))
    return Message(content=RecordDict({SAMPLES_KEY: ArrayRecord({"images": Array(images.numpy())})}), reply_to=msg)
