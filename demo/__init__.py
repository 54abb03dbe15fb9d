"""``python -m demo`` (what ``make demo`` runs): the whole platform end to end on this CPU machine.

train → build → serve (the real Triton) → query over HTTP and gRPC → load test with Locust → report, with Prometheus
scraping the server and the load generator throughout. Settings live in ``demo/demo.toml``.
"""
