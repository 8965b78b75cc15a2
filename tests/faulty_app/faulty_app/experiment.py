"""FedAvg (with any protection of the DP app) whose clients misbehave as the ``Faults`` section says.

- ``fail-partitions``: clients of these partitions raise in every round;
- ``sleep-partition`` sleeps ``sleep-seconds`` before it trains in round ``sleep-round``;
- the environment variable ``PRIVSHARE_TEST_KILL_AT_ROUND`` makes the first client of that
  round SIGKILL its process: with the in-process grid of the tests, the server dies with it,
  as on a machine that is switched off.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import cast

from flwr.app import Context, Message

from flwr_privshare.apps import FedAvgExperiment
from flwr_privshare.config import Section, setting
from flwr_privshare.dp import DPSection
from flwr_privshare.protections import ProtectionSection
from flwr_privshare.protocol import CONFIG_KEY, SERVER_ROUND
from flwr_privshare.recipe.section import RecipeSection
from flwr_privshare.visualmixer.section import VisualMixerSection

KILL_AT_ROUND = "PRIVSHARE_TEST_KILL_AT_ROUND"


@dataclass(frozen=True)
class FaultSection(Section):
    title = "Faults"

    fail_partitions: str = setting("", "comma-separated partitions whose clients raise in every round")
    sleep_partition: int = setting(-1, "the partition whose client sleeps (-1: none)")
    sleep_seconds: float = setting(0.0, "how long it sleeps")
    sleep_round: int = setting(1, "the round in which it sleeps")


class FaultyExperiment(FedAvgExperiment):
    def train(self, msg: Message, context: Context) -> Message:
        faults = self.schema.parse(context.run_config)[FaultSection]
        partition = int(context.node_config["partition-id"])
        server_round = cast(int, msg.content.config_records[CONFIG_KEY][SERVER_ROUND])
        if os.environ.get(KILL_AT_ROUND) == str(server_round):
            os.kill(os.getpid(), signal.SIGKILL)
        if str(partition) in faults.fail_partitions.split(","):
            raise RuntimeError(f"client of partition {partition} failed on purpose in round {server_round}")
        if partition == faults.sleep_partition and server_round == faults.sleep_round:
            time.sleep(faults.sleep_seconds)
        return super().train(msg, context)


EXPERIMENT = FaultyExperiment(
    RecipeSection,
    ProtectionSection,
    VisualMixerSection,
    DPSection,
    FaultSection,
    defaults={"protection": "none", "num-server-rounds": 2},
)
