"""ClientApp: train a private DPM and share poisoned features (plain FedAvg training while Phi bootstraps)."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flwr_privshare.feature_sharing_client import dpm_app_train

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Reply with poisoned features and labels, or with a locally trained model during the bootstrap."""
    return dpm_app_train(msg, context)
