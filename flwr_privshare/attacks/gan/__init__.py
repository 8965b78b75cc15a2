"""The GAN attack by an insider client (Hitaj et al., "Deep Models Under the GAN", CCS 2017).

:mod:`.generator` (the DCGAN generator and its training against the global model),
:mod:`.insider` (what the malicious client does), :mod:`.audit` (the per-round measurement)
and :mod:`.attack` (its place in the attack registry); :class:`GanSection` holds the keys.
"""

from .attack import AUDIT_ARTIFACT, GanAttack, prepare_gan_audit
from .audit import GanAudit, generation_metrics, ssim_matrix
from .generator import Generator, train_generator
from .insider import answer_audit, attacks_now, model_outputs_of, partition_under_attack, with_generated_fakes
from .section import GanSection

__all__ = [
    "AUDIT_ARTIFACT",
    "GanAttack",
    "GanAudit",
    "GanSection",
    "Generator",
    "answer_audit",
    "attacks_now",
    "generation_metrics",
    "model_outputs_of",
    "partition_under_attack",
    "prepare_gan_audit",
    "ssim_matrix",
    "train_generator",
    "with_generated_fakes",
]
