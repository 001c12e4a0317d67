"""``python -m exporter.cli.fleet_worker RECIPE``: one recipe of ``exporter run`` in its own process, entered
through the CLI's one error boundary (``cli.app.fleet_worker_main``)."""

from exporter.cli.app import fleet_worker_main

if __name__ == "__main__":
    fleet_worker_main()
