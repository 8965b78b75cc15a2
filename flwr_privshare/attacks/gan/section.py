"""The GAN attack's section: who attacks, whom, from which round and with what budget."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.checks import MAX_INT, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Interval, require
from ...config.section import Section, setting


@dataclass(frozen=True)
class GanSection(Section):
    """The GAN attack by an insider client (Hitaj et al., CCS 2017); off while ``gan-attacker`` is -1."""

    title = "GAN attack"

    gan_attacker: int = setting(
        -1,
        "partition id of the malicious client (-1: no attack)",
        Interval(f"-1 (no attack) or a partition id (at most {MAX_INT})", -1, MAX_INT),
    )
    gan_victim_class: int = setting(0, "the class whose images the attacker wants to see", NON_NEGATIVE_INT)
    gan_start_round: int = setting(1, "first round in which the attacker trains its generator", POSITIVE_INT)
    gan_generator_steps: int = setting(100, "generator updates per round (the attacker's budget)", POSITIVE_INT)
    gan_batch_size: int = setting(64, "images per generator update", POSITIVE_INT)
    gan_learning_rate: float = setting(0.002, "the generator's Adam learning rate", POSITIVE)
    gan_jitter: int = setting(
        2, "random shift (pixels) of the generated images while the generator trains (0: none)", NON_NEGATIVE_INT
    )
    gan_fake_images: int = setting(
        500, 'generated images the attacker adds to its local training, labelled "fake"', POSITIVE_INT
    )
    gan_control: bool = setting(False, "remove the victim class from every client (the control run)")
    gan_audit_samples: int = setting(64, "generated images the auditor measures every round", POSITIVE_INT)
    gan_oracle_epochs: int = setting(3, "epochs of the auditor's oracles on the public split", POSITIVE_INT)

    @property
    def active(self) -> bool:
        """Whether a client attacks in this run."""
        return self.gan_attacker >= 0

    def model_outputs(self, num_classes: int) -> int:
        """The global model's outputs: the data set's classes, plus the "fake" class when the attack is on."""
        return num_classes + 1 if self.active else num_classes

    def validate_for(self, num_classes: int, num_partitions: int) -> None:
        """Check the victim class and the attacker against the data set and the federation (before any work)."""
        if not self.active:
            return
        require(
            self.gan_victim_class < num_classes,
            "gan-victim-class",
            self.gan_victim_class,
            f"a class of the data set, in [0, {num_classes})",
        )
        require(
            self.gan_attacker < num_partitions,
            "gan-attacker",
            self.gan_attacker,
            f"-1 or a partition id in [0, {num_partitions})",
        )
