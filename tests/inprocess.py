"""Run an experiment's ServerApp and its clients in this process: the skeleton without Ray or a SuperLink."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from flwr_privshare.apps import Experiment


class InProcessGrid:
    """The part of a Grid that strategies use; every message is answered on its node by ``experiment.train``
    (or ``experiment.query`` for a query message).

    As Flower's simulation engine does, a handler that raises answers with an error reply
    (``CLIENT_APP_RAISED_EXCEPTION``, the exception's type and text as the reason). Messages are
    handled one after the other; a handler still running ``timeout`` seconds after it started is
    left to finish in the background and its node gives no reply (a real grid waits for all nodes
    at once, so there the round's deadline is every node's).
    """

    def __init__(
        self, experiment: Experiment, num_nodes: int, run_config: dict[str, Any], node_ids: list[int] | None = None
    ) -> None:
        self.experiment = experiment
        node_ids = node_ids or list(range(1, num_nodes + 1))  # node_ids[i] holds partition i
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": partition, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=run_config,
            )
            for partition, node in enumerate(node_ids)
        }

    def get_node_ids(self) -> list[int]:
        return sorted(self.contexts)  # like a SuperLink: by node id, which says nothing of the partition

    def send_and_receive(self, messages: Iterable[Message], timeout: float | None = None) -> list[Message]:
        replies: list[Message] = []
        for message in messages:
            TaskIdentity.node_id = message.metadata.dst_node_id
            handler = threading.Thread(target=self._answer, args=(message, replies), daemon=True)
            handler.start()
            handler.join(timeout)
            TaskIdentity.node_id = 0
        return list(replies)

    def _answer(self, message: Message, replies: list[Message]) -> None:
        is_query = message.metadata.message_type == MessageType.QUERY
        handler = self.experiment.query if is_query else self.experiment.train
        try:
            reply = handler(message, self.contexts[message.metadata.dst_node_id])
        except Exception as error:
            reason = f"{type(error)}:<'{error}'>"
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)
        replies.append(reply)


def run_in_process(
    experiment: Experiment, num_nodes: int, run_config: dict[str, Any], node_ids: list[int] | None = None
) -> Any:
    """``experiment.run`` with ``num_nodes`` in-process clients (node ``node_ids[i]``, default ``i + 1``, holds
    partition ``i``); returns the run folder."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    grid = InProcessGrid(experiment, num_nodes, run_config, node_ids)
    server = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    return experiment.run(grid, server)  # type: ignore[arg-type]
