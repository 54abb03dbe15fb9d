"""Locust entry point; run it through ``python -m benchmarks loadtest`` (which prepares payloads and settings).

It binds exactly one user class (HTTP or gRPC; for an embedding model the variant that checks every vector) and at
most one load shape, because Locust picks up every User and the
first LoadTestShape it finds in this module. For more load than one process can generate (one Locust process is
limited to one core), ``python -m benchmarks loadtest --workers N`` runs Locust's master/worker mode; across hosts,
start ``locust -f benchmarks/locustfile.py --master`` on one machine and ``--worker --master-host HOST`` on others with
the same LOADTEST_SETTINGS environment.
"""
import locust.stats
from locust import events

from benchmarks.load_settings import LoadSettings

locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 2  # the progress line reads the history file; the default is 10 s

_settings = LoadSettings.from_env()

if _settings.embedding_output and _settings.protocol == "grpc":
    from benchmarks.locust_users import EmbeddingGrpcUser  # noqa: F401
elif _settings.embedding_output:
    from benchmarks.locust_users import EmbeddingHttpUser  # noqa: F401
elif _settings.protocol == "grpc":
    from benchmarks.locust_users import TritonGrpcUser  # noqa: F401
else:
    from benchmarks.locust_users import TritonHttpUser  # noqa: F401

if _settings.shape == "step":
    from benchmarks.load_shapes import StepShape as LoadShape

    LoadShape.settings = _settings
elif _settings.shape == "ramp":
    from benchmarks.load_shapes import RampShape as LoadShape

    LoadShape.settings = _settings

if _settings.client_metrics_port:
    @events.init.add_listener
    def _expose_client_metrics(environment, **_kwargs):
        """Serve client latency histograms from load-generating processes (standalone or workers)."""
        from locust.runners import MasterRunner, WorkerRunner
        from prometheus_client import start_http_server

        if isinstance(environment.runner, MasterRunner):
            return
        port = _settings.client_metrics_port
        if _settings.client_metrics_port_per_worker and isinstance(environment.runner, WorkerRunner):
            port += environment.runner.worker_index
        start_http_server(port, addr=_settings.host if _settings.host in ("127.0.0.1", "localhost") else "0.0.0.0")


EXIT_GRACE_S = 15.0


@events.quit.add_listener
def _exit_even_if_shutdown_hangs(exit_code, **_kwargs):
    """Locust fires ``quit`` after printing its final statistics; it then closes its CSV files and leaves the
    interpreter. Rarely (seen once in a demo run, gRPC user with grpcio's gevent integration) the interpreter's own
    shutdown then hangs with the results already written, and the run would be lost to the harness' timeout. A real
    OS thread (not a greenlet, which a hung hub would never run) waits ``EXIT_GRACE_S``, writes every thread's stack
    to the log so the hang can be diagnosed, and ends the process with Locust's own exit code. That thread needs the
    GIL, which late interpreter finalization no longer hands out; ``faulthandler``'s native timer does not, so it is
    the backstop (stacks, then exit status 1) a few seconds later."""
    import faulthandler
    import os
    import sys

    from gevent import monkey

    start_thread = monkey.get_original("_thread", "start_new_thread")
    sleep = monkey.get_original("time", "sleep")  # unpatched: blocks only this OS thread

    def watchdog():
        sleep(EXIT_GRACE_S)
        print(f"[locustfile] Locust still running {EXIT_GRACE_S:g} s after its final statistics; its threads:",
              file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(exit_code)

    start_thread(watchdog, ())
    faulthandler.dump_traceback_later(EXIT_GRACE_S + 5, exit=True)
