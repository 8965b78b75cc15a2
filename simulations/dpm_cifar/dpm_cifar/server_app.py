"""ServerApp: bootstrap Phi, train the reconstructors, run FeatureSharing rounds, audit the DPM."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flwr_privshare.dpm_experiment import run_dpm_experiment

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment described by ``context.run_config``."""
    run_dpm_experiment(grid, context)
