"""Client sampling that a seed reproduces: the grid lists its nodes in the order of their partitions.

Flower's strategies sample ``random.sample(grid.get_node_ids(), m)``. The seeded ``random``
module makes the *positions* drawn reproducible, but the node ids come from ``os.urandom`` in
every simulation (and from the SuperLink in a deployment), and their order with them: two runs
with one seed would train different partitions. :class:`PartitionOrderedGrid` asks every node
once for its ``partition-id`` (a Flower query message, answered from the node's config by
:func:`answer_partition_query`) and lists node ids sorted by it, so position ``i`` is always
partition ``i``. Nodes without a partition id (a deployment that does not set one) come after,
in node-id order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from ..protocol import PARTITION_ID

#: The config record of a partition query (the only record such a query carries).
PARTITION_QUERY = "partition-query"


def is_partition_query(msg: Message) -> bool:
    """Whether ``msg`` asks for the node's partition."""
    return PARTITION_QUERY in msg.content.config_records


def answer_partition_query(msg: Message, context: Context) -> Message:
    """Reply with the node's ``partition-id`` (nothing when its node config has none): an index, not data."""
    partition = context.node_config.get(PARTITION_ID)
    metrics = MetricRecord({PARTITION_ID: int(cast(int, partition))}) if partition is not None else MetricRecord()
    return Message(RecordDict({PARTITION_ID: metrics}), reply_to=msg)


class PartitionOrderedGrid:
    """A :class:`~flwr.serverapp.Grid` whose ``get_node_ids`` lists the nodes by partition (see the module docstring).

    Every other attribute is the wrapped grid's. The partitions are asked for on the first call
    (and again when the set of nodes changes), with ``timeout`` seconds for the answers.
    """

    def __init__(self, grid: Grid, timeout: float = 600.0) -> None:
        self.grid = grid
        self.timeout = timeout
        self.partitions: dict[int, int] = {}
        self._asked: frozenset[int] = frozenset()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def get_node_ids(self) -> Iterable[int]:
        nodes = list(self.grid.get_node_ids())
        if frozenset(nodes) != self._asked:
            self._ask(nodes)
        unknown = len(nodes) + max(self.partitions.values(), default=0)
        return sorted(nodes, key=lambda node: (self.partitions.get(node, unknown), node))

    def _ask(self, nodes: list[int]) -> None:
        messages = [
            Message(RecordDict({PARTITION_QUERY: ConfigRecord()}), dst_node_id=node, message_type=MessageType.QUERY)
            for node in nodes
        ]
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            record = None if reply.has_error() else reply.content.metric_records.get(PARTITION_ID)
            if record is not None and PARTITION_ID in record:
                self.partitions[reply.metadata.src_node_id] = int(cast(int, record[PARTITION_ID]))
        self._asked = frozenset(nodes)
