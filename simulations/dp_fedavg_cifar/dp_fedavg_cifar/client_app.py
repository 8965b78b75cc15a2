"""ClientApp: train with DP-SGD (accountant kept across rounds), or plainly for DP-FedAvg."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flwr_privshare.clients import dp_clipping_mod, train_handler

app = ClientApp()


@app.train(mods=[dp_clipping_mod])
def train(msg: Message, context: Context) -> Message:
    """Train the global model on this client's partition under the configured protection."""
    return train_handler(msg, context)
