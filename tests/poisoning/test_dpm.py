"""The Deep Poisoning Module: shape contract, Eq. 3 training, lambda = 0, bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch.nn import functional as F

from flwr_privshare.config import RunConfig
from flwr_privshare.data import ImageDataset
from flwr_privshare.models import build_model
from flwr_privshare.poisoning import (
    DeepPoisoningModule,
    Reconstructor,
    SplitModel,
    evaluate_poisoning,
    feature_shape,
    poisoned_features,
    split_model,
    ssim_per_image,
    train_dpm,
    train_reconstructor,
)
from flwr_privshare.poisoning.evaluation import STRETCH_TAIL
from flwr_privshare.poisoning.procedures import ensemble_for, train_stand_in_dpm
from flwr_privshare.poisoning.reconstructor import stretch
from flwr_privshare.train import batches

from ..experiments import DPM_LIBRARY_DEFAULTS

CPU = torch.device("cpu")


def run_config(**values: object) -> RunConfig:
    """The DPM section's library defaults with ``values`` (run-config keys as Python names)."""
    return DPM_LIBRARY_DEFAULTS.schema.parse({key.replace("_", "-"): value for key, value in values.items()})


@dataclass
class Tiny:
    """MNIST CNN split at pool1, a px2s2 reconstructor briefly trained to invert it, 128 images."""

    split: SplitModel
    shape: tuple[int, int, int]
    reconstructor: Reconstructor
    data: ImageDataset


@pytest.fixture(scope="module")
def tiny(mnist_test: ImageDataset) -> Tiny:
    torch.manual_seed(0)
    split = split_model(build_model("mnist-cnn"), "pool1")
    shape = feature_shape(split.featurizer, (1, 28, 28))
    reconstructor = Reconstructor("px2s2", shape, (1, 28, 28))
    data = mnist_test.head(128)
    train_reconstructor(
        reconstructor, split.featurizer, data, epochs=2, batch_size=32, device=CPU, generator=torch.Generator()
    )
    return Tiny(split, shape, reconstructor, data)


def test_poisoned_features_keep_the_featurizer_contract_and_the_decider_takes_both(tiny: Tiny) -> None:
    split, shape, data = tiny.split, tiny.shape, tiny.data
    dpm = DeepPoisoningModule(shape[0])
    with torch.no_grad():  # perturb so that P is not the identity it starts as
        for parameter in dpm.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    original = poisoned_features(split.featurizer, None, data, device=CPU)
    poisoned = poisoned_features(split.featurizer, dpm, data, device=CPU)
    assert original.shape == poisoned.shape == (len(data), *shape)
    assert original.dtype == poisoned.dtype == torch.float16
    assert not torch.equal(original, poisoned)
    for features in (original, poisoned):
        assert split.decider(features.float()).shape == (len(data), 10)


def test_an_untrained_dpm_is_the_identity(tiny: Tiny) -> None:
    split, shape, data = tiny.split, tiny.shape, tiny.data
    features = split.featurizer(data.images[:8].float() / 255)
    torch.testing.assert_close(DeepPoisoningModule(shape[0])(features), features)


def test_training_with_the_ssim_term_drives_reconstruction_similarity_down(tiny: Tiny) -> None:
    split, shape, reconstructor, data = tiny.split, tiny.shape, tiny.reconstructor, tiny.data
    images = data.images[:64].float() / 255
    features = split.featurizer(images).detach().requires_grad_(True)
    similarity = ssim_per_image(reconstructor(features), images).mean()
    similarity.backward()
    assert features.grad is not None and features.grad.abs().sum() > 0  # the SSIM loss is differentiable

    dpm = DeepPoisoningModule(shape[0])
    common = {"batch_size": 32, "learning_rate": 1e-2, "device": CPU, "ssim_weight": 1.0}
    first = train_dpm(dpm, split, reconstructor, data, epochs=1, generator=torch.Generator().manual_seed(0), **common)
    later = train_dpm(dpm, split, reconstructor, data, epochs=2, generator=torch.Generator().manual_seed(1), **common)
    assert abs(later.ssim) < 0.5 * abs(first.ssim)
    before = evaluate_poisoning(split, DeepPoisoningModule(shape[0]), {"px2s2": reconstructor}, data, device=CPU)
    after = evaluate_poisoning(split, dpm, {"px2s2": reconstructor}, data, device=CPU)
    for kind in ("", "_stretched"):  # the identity P hides nothing from either attacker
        assert before[f"px2s2/ssim_poisoned{kind}"] == pytest.approx(before[f"px2s2/ssim_original{kind}"], abs=1e-3)
    with torch.no_grad():  # the stretched attacker stretches psi's raw output, not its min-max image
        every_image = data.images.float() / 255
        features = split.featurizer(every_image).half().float()
        stretched = ssim_per_image(stretch(reconstructor.raw(features), STRETCH_TAIL), every_image).mean().item()
    assert before["px2s2/ssim_original_stretched"] == pytest.approx(stretched, abs=1e-4)
    assert before["px2s2/ssim_original_stretched"] != pytest.approx(before["px2s2/ssim_original"], abs=1e-3)
    assert abs(after["px2s2/ssim_poisoned"]) < 0.5 * abs(before["px2s2/ssim_poisoned"])
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in split.decider.parameters())


def test_lambda_zero_is_plain_cross_entropy_fine_tuning_of_p(tiny: Tiny) -> None:
    split, shape, reconstructor, data = tiny.split, tiny.shape, tiny.reconstructor, tiny.data
    torch.manual_seed(1)
    dpm = DeepPoisoningModule(shape[0])
    reference = DeepPoisoningModule(shape[0])
    reference.load_state_dict(dpm.state_dict())
    train_dpm(
        dpm,
        split,
        reconstructor,
        data,
        ssim_weight=0.0,
        epochs=2,
        batch_size=32,
        device=CPU,
        generator=torch.Generator().manual_seed(3),
    )

    # Independent loop: Adam on P alone, cross-entropy of the frozen decider on P(phi1 x).
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    split.featurizer.eval(), split.decider.eval()
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        for images, labels in batches(data, 32, CPU, generator):
            loss = F.cross_entropy(split.decider(reference(split.featurizer(images).detach())), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for (name, trained), expected in zip(dpm.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(trained, expected, msg=name)


def test_negative_lambda_is_rejected_before_training(tiny: Tiny) -> None:
    split, shape, reconstructor, data = tiny.split, tiny.shape, tiny.reconstructor, tiny.data
    dpm = DeepPoisoningModule(shape[0])
    before = {k: v.clone() for k, v in dpm.state_dict().items()}
    with pytest.raises(ValueError, match=r"ssim_weight \(lambda\) must be >= 0, got -0.5"):
        train_dpm(dpm, split, reconstructor, data, ssim_weight=-0.5, epochs=1, device=CPU, generator=torch.Generator())
    assert all(torch.equal(before[k], v) for k, v in dpm.state_dict().items())


def test_feature_noise_puts_gaussian_noise_on_the_straw_mans_input_only(tiny: Tiny) -> None:
    split, shape, reconstructor, data = tiny.split, tiny.shape, tiny.reconstructor, tiny.data
    torch.manual_seed(2)
    dpm = DeepPoisoningModule(shape[0])
    reference = DeepPoisoningModule(shape[0])
    reference.load_state_dict(dpm.state_dict())
    settings = {"ssim_weight": 2.0, "epochs": 1, "batch_size": 32, "device": CPU}
    noisy_training = {"feature_noise": 0.5, "generator": torch.Generator().manual_seed(4)}
    train_dpm(dpm, split, reconstructor, data, **noisy_training, **settings)

    # Independent loop: the decider sees P(phi1 x); psi sees P(phi1 x) + 0.5 * std * N(0, I).
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    for module in (split.featurizer, split.decider, reconstructor):
        module.eval()
    generator = torch.Generator().manual_seed(4)
    for images, labels in batches(data, 32, CPU, generator):
        poisoned = reference(split.featurizer(images).detach())
        noisy = poisoned + 0.5 * poisoned.detach().std() * torch.randn(poisoned.shape, generator=generator)
        loss = F.cross_entropy(split.decider(poisoned), labels)
        loss = loss + 2.0 * ssim_per_image(reconstructor(noisy), images).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for (name, trained), expected in zip(dpm.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(trained, expected, msg=name)

    noiseless = DeepPoisoningModule(shape[0])
    noiseless.load_state_dict(reference.state_dict())
    train_dpm(noiseless, split, reconstructor, data, generator=torch.Generator().manual_seed(4), **settings)
    assert not torch.equal(noiseless.state_dict()["0.body.6.weight"], dpm.state_dict()["0.body.6.weight"])


def test_an_ensemble_makes_the_ssim_term_the_mean_magnitude_over_every_straw_man(tiny: Tiny) -> None:
    split, shape, reconstructor, data = tiny.split, tiny.shape, tiny.reconstructor, tiny.data
    torch.manual_seed(3)
    members = [Reconstructor(name, shape, (1, 28, 28)) for name in ("rx3s2", "px3s2")]
    frozen_copies = [{k: v.clone() for k, v in member.state_dict().items()} for member in members]
    dpm = DeepPoisoningModule(shape[0])
    reference = DeepPoisoningModule(shape[0])
    reference.load_state_dict(dpm.state_dict())
    settings = {"ssim_weight": 3.0, "epochs": 1, "batch_size": 32, "device": CPU}
    result = train_dpm(
        dpm, split, reconstructor, data, ensemble=members, generator=torch.Generator().manual_seed(5), **settings
    )

    # Independent loop: L = CE + 3 * (|SSIM_psi| + |SSIM_rx3s2| + |SSIM_px3s2|) / 3, batch means.
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    for module in (split.featurizer, split.decider, reconstructor, *members):
        module.eval()
    psi_ssim_sum = 0.0
    for images, labels in batches(data, 32, CPU, torch.Generator().manual_seed(5)):
        poisoned = reference(split.featurizer(images).detach())
        magnitudes = [ssim_per_image(straw(poisoned), images).abs().mean() for straw in (reconstructor, *members)]
        loss = F.cross_entropy(split.decider(poisoned), labels) + 3.0 * sum(magnitudes) / 3
        psi_ssim_sum += ssim_per_image(reconstructor(poisoned), images).detach().sum().item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for (name, trained), expected in zip(dpm.state_dict().items(), reference.state_dict().values(), strict=True):
        # Adam's step normalisation magnifies float summation-order noise (1e-5 after 4 steps).
        torch.testing.assert_close(trained, expected, rtol=1e-3, atol=1e-4, msg=name)
    assert result.ssim == pytest.approx(psi_ssim_sum / len(data), abs=1e-4)  # psi's own SSIM, not the ensemble's
    for member, before in zip(members, frozen_copies, strict=True):  # the straw men stay frozen
        for name, value in member.state_dict().items():
            torch.testing.assert_close(value, before[name], msg=name)

    alone = DeepPoisoningModule(shape[0])
    alone.load_state_dict(reference.state_dict())
    train_dpm(alone, split, reconstructor, data, generator=torch.Generator().manual_seed(5), **settings)
    differences = [(alone.state_dict()[name] - value).abs().max() for name, value in dpm.state_dict().items()]
    assert max(differences) > 1e-3  # far above the tolerance: the ensemble term changed training


def test_negative_feature_noise_is_rejected_before_training(tiny: Tiny) -> None:
    dpm = DeepPoisoningModule(tiny.shape[0])
    with pytest.raises(ValueError, match=r"feature_noise must be >= 0, got -0.1"):
        train_dpm(
            dpm,
            tiny.split,
            tiny.reconstructor,
            tiny.data,
            ssim_weight=1.0,
            feature_noise=-0.1,
            epochs=1,
            device=CPU,
            generator=torch.Generator(),
        )


def test_stand_in_dpms_are_reproducible_and_each_stream_is_its_own(tiny: Tiny) -> None:
    config = run_config(num_server_rounds=1, dpm_epochs=1, batch_size=32)

    def weights(stream: tuple[object, ...]) -> torch.Tensor:
        dpm = train_stand_in_dpm(config, tiny.split, tiny.reconstructor, tiny.data, ssim_weight=1.0, stream=stream).dpm
        return torch.cat([parameter.detach().flatten() for parameter in dpm.parameters()])

    audit = weights(())
    assert torch.equal(audit, weights(()))
    assert not torch.equal(audit, weights(("client", 1)))


def test_a_stand_in_for_fewer_rounds_trains_as_a_shorter_run_would(tiny: Tiny) -> None:
    def weights(rounds_in_run: int, rounds: int | None) -> torch.Tensor:
        config = run_config(num_server_rounds=rounds_in_run, dpm_epochs=1, batch_size=32)
        dpm = train_stand_in_dpm(config, tiny.split, tiny.reconstructor, tiny.data, ssim_weight=1.0, rounds=rounds).dpm
        return torch.cat([parameter.detach().flatten() for parameter in dpm.parameters()])

    first_round = weights(3, 1)
    assert torch.equal(first_round, weights(1, None))
    assert not torch.equal(first_round, weights(3, None))


def test_a_stand_in_trains_the_warm_up_epochs_before_its_rounds(tiny: Tiny) -> None:
    def weights(rounds: int, warmup_epochs: int) -> torch.Tensor:
        config = run_config(num_server_rounds=rounds, dpm_epochs=1, dpm_warmup_epochs=warmup_epochs, batch_size=32)
        dpm = train_stand_in_dpm(config, tiny.split, tiny.reconstructor, tiny.data, ssim_weight=1.0).dpm
        return torch.cat([parameter.detach().flatten() for parameter in dpm.parameters()])

    # One round after a 2-epoch warm-up is three epochs, as three rounds without one.
    assert torch.equal(weights(1, 2), weights(3, 0))
    assert not torch.equal(weights(1, 2), weights(1, 0))


def test_the_ensemble_holds_the_asked_instances_of_each_architecture_and_the_first_is_unchanged(tiny: Tiny) -> None:
    def members(instances: int) -> list[Reconstructor]:
        config = run_config(
            dpm_ensemble="px3s2,rx3s2-c", dpm_ensemble_instances=instances, reconstructor_epochs=1, batch_size=64
        )
        return ensemble_for(config, tiny.split, tiny.data, tiny.shape)

    def weights(member: Reconstructor) -> torch.Tensor:
        return torch.cat([parameter.detach().flatten() for parameter in member.parameters()])

    one, two = members(1), members(2)
    assert [member.name for member in one] == ["px3s2", "rx3s2-c"]
    assert [member.name for member in two] == ["px3s2", "px3s2", "rx3s2-c", "rx3s2-c"]
    # Instance 0 is the member a one-instance ensemble holds; instance 1 comes from seeds of its own.
    assert torch.equal(weights(two[0]), weights(one[0])) and torch.equal(weights(two[2]), weights(one[1]))
    assert not torch.equal(weights(two[1]), weights(two[0])) and not torch.equal(weights(two[3]), weights(two[2]))
