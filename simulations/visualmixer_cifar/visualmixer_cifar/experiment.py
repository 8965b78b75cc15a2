"""The app's experiment: FedAvg under VisualMixer, MDP (or none), with oracle recognition after the rounds."""

from flwr_privshare.apps import FedAvgExperiment
from flwr_privshare.attacks import GanSection, OracleSection
from flwr_privshare.mdp import MDPSection
from flwr_privshare.protections import ProtectionSection
from flwr_privshare.recipe.section import RecipeSection
from flwr_privshare.visualmixer.section import VisualMixerSection

EXPERIMENT = FedAvgExperiment(
    RecipeSection,
    ProtectionSection,
    VisualMixerSection,
    MDPSection,
    OracleSection,
    GanSection,
    defaults={"protection": "visualmixer", "num-server-rounds": 10, "batch-size": 16},
    attacks=("oracle", "gan"),
)
