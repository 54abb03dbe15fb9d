"""Prometheus metrics of a training run, served on ``--metrics-port`` by rank 0 (off when the port is 0).

Names are part of the contract with ``monitoring/`` (dashboards, the "training stalled" alert); every series carries
the label ``model=<name>``:

=============================================  =======  ==========================================================
training_loss                                  gauge    mean training loss over the last progress interval
training_val_loss                              gauge    validation loss after the latest epoch
training_accuracy                              gauge    validation (held-out) accuracy after the latest epoch
training_best_accuracy                         gauge    best validation accuracy so far
training_learning_rate                         gauge    current learning rate
training_step                                  gauge    optimizer steps done
training_epoch                                 gauge    completed epochs
training_samples_per_second                    gauge    training throughput over the last progress interval
training_seconds_since_checkpoint              gauge    seconds since the last checkpoint (since start before one)
training_last_checkpoint_timestamp_seconds     gauge    Unix time of the last checkpoint (0 before one)
training_checkpoints_written_total             counter  checkpoints written by this process
training_running                               gauge    1 while training, 0 while idle (sidecar waiting for data)
=============================================  =======  ==========================================================
"""
from __future__ import annotations

import time

from common.errors import UserError
from common.net import port_in_use


class TrainingMetrics:
    def __init__(self, model: str, port: int, host: str = "127.0.0.1"):
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.started = time.time()
        self.last_checkpoint: float | None = None

        def gauge(name: str, doc: str) -> "Gauge":
            return Gauge(name, doc, ["model"], registry=self.registry).labels(model=model)

        self.loss = gauge("training_loss", "Mean training loss over the last progress interval")
        self.val_loss = gauge("training_val_loss", "Validation loss after the latest epoch")
        self.accuracy = gauge("training_accuracy", "Validation (held-out) accuracy after the latest epoch")
        self.best_accuracy = gauge("training_best_accuracy", "Best validation accuracy so far")
        self.learning_rate = gauge("training_learning_rate", "Current learning rate")
        self.step = gauge("training_step", "Optimizer steps done")
        self.epoch = gauge("training_epoch", "Completed epochs")
        self.samples_per_second = gauge("training_samples_per_second", "Training throughput (all processes)")
        self.last_checkpoint_timestamp = gauge("training_last_checkpoint_timestamp_seconds",
                                               "Unix time of the last checkpoint written (0 before the first)")
        self.running = gauge("training_running", "1 while training, 0 while idle")
        since = gauge("training_seconds_since_checkpoint",
                      "Seconds since the last checkpoint (since process start before the first)")
        since.set_function(lambda: time.time() - (self.last_checkpoint or self.started))
        self.checkpoints = Counter("training_checkpoints_written", "Checkpoints written by this process", ["model"],
                                   registry=self.registry).labels(model=model)
        self.server = None
        if port:
            if port_in_use(port, "127.0.0.1" if host in ("0.0.0.0", "") else host):
                raise UserError(f"metrics port {port} is already in use; pick another --metrics-port (0 disables)")
            self.server, _thread = start_http_server(port, addr=host, registry=self.registry)

    def checkpoint_written(self) -> None:
        self.last_checkpoint = time.time()
        self.last_checkpoint_timestamp.set(self.last_checkpoint)
        self.checkpoints.inc()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
