"""ServerApp: FedAvg (or DPFedAvg) with central evaluation and per-round epsilon."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flwr_privshare.server import run_fedavg_experiment

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment described by ``context.run_config``."""
    run_fedavg_experiment(grid, context)
