"""The app's experiment: FedAvg under DP-FedAvg or DP-SGD, alone or with VisualMixer or MDP."""

from flwr_privshare.apps import FedAvgExperiment
from flwr_privshare.attacks import GanSection, OracleSection
from flwr_privshare.dp import DPSection
from flwr_privshare.mdp import MDPSection
from flwr_privshare.protections import ProtectionSection
from flwr_privshare.recipe.section import RecipeSection
from flwr_privshare.visualmixer.section import VisualMixerSection

EXPERIMENT = FedAvgExperiment(
    RecipeSection,
    ProtectionSection,
    VisualMixerSection,
    MDPSection,
    DPSection,
    OracleSection,
    GanSection,
    # From the training-recipe study: DP-SGD at epsilon 8 trains best with large batches and a
    # large learning rate, without augmentation (experiments/training_recipe).
    defaults={
        "protection": "dp-fedavg",
        "oracle-epochs": 0,
        "num-server-rounds": 8,
        "batch-size": 128,
        "learning-rate": 0.4,
    },
    attacks=("oracle", "gan"),
)
