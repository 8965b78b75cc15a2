"""A bare ClientApp that returns the model it received, and a ServerApp that times Flower's FedAvg rounds."""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from flwr_privshare.models import build_model
from flwr_privshare.results import atomic_write_json

server = ServerApp()
client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    content = RecordDict({"arrays": msg.content.array_records["arrays"], "metrics": MetricRecord({"num-examples": 1})})
    return Message(content, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    started = time.monotonic()
    elapsed: list[float] = []

    def clock(server_round: int, arrays: ArrayRecord) -> None:
        elapsed.append(round(time.monotonic() - started, 3))

    strategy = FedAvg(fraction_train=float(config["fraction-train"]), fraction_evaluate=0.0, min_available_nodes=1)
    model = build_model(str(config["model"]))
    strategy.start(
        grid, ArrayRecord(model.state_dict()), num_rounds=int(config["num-server-rounds"]), evaluate_fn=clock
    )
    atomic_write_json(Path(str(config["output"])), {"elapsed_s": elapsed})
