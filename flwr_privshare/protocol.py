"""Message keys shared by the server strategies and the client handlers (as Flower's DP constants module).

Strategies (``flwr_privshare.strategies``) write these keys and client handlers
(``flwr_privshare.apps``) read them; both import them from here, so neither side depends on
the other's module.
"""

from __future__ import annotations

# Every train message: the model, the round config and the reply's metrics (Flower's own names).
ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
SERVER_ROUND = "server-round"
NUM_EXAMPLES = "num-examples"
# The simulated partition a client trained on, in its train reply's metrics: the server records
# which partitions trained in which round (``participation.json``), the ground truth of
# membership inference when clients are sampled. An index, not data; never aggregated.
PARTITION_ID = "partition-id"
# Seconds a client's local training loop took, in its train reply's metrics; the round's
# aggregate is the sum over clients (``train-seconds``), so that the time outside training
# (loading data, building the model, the wire) can be told apart.
TRAIN_SECONDS = "train-seconds"
# 1 when the client trained on a CUDA device, 0 on the CPU; the round's mean is the share of
# clients on a GPU (``client-resources-num-gpus`` > 0 gives each Ray actor one).
ON_CUDA = "on-cuda"

# DP-FedAvg with client-side clipping: Flower's fixedclipping_mod reads "clipping_norm";
# with client-side adaptive clipping the server also sends this flag, so that the client's
# mod runs Flower's adaptiveclipping_mod instead.
CLIPPING_NORM_KEY = "clipping_norm"
ADAPTIVE_CLIPPING_KEY = "adaptive-clipping"

# Feature sharing with Deep Poisoning Modules.
FEATURE_SHARING_TASK = "feature-sharing"  # the "task" config value of a feature-sharing round
TASK_KEY = "task"
FEATURES_KEY = "features"  # the reply's array record: "features" (float16) and "labels" (int64)
RECONSTRUCTOR_KEY = "reconstructor"
CHECK_RECONSTRUCTOR_KEY = "check-reconstructor"
ENSEMBLE_KEY = "ensemble"  # member i's weights travel under f"{ENSEMBLE_KEY}-{i}"
WARMUP_KEY = "dpm-warmup-epochs"  # further epochs a fresh DPM trains before it shares
SELF_CHECK_FAILED = 1  # the error code of a reply withheld because no DPM draw passed its self-check
