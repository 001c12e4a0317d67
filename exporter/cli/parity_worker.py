"""``python -m exporter.cli.parity_worker``: the fresh process in which ``verify`` re-runs parity.

A JSON request on stdin, one JSON line on stdout (``exporter.quality.verify.parity_answer``); anything a
library prints goes to stderr. A typed error travels back as the CLI's error record (``cli.app.error_record``,
the one boundary's), which ``verify`` raises again in the parent with its class, message and hint.
"""

from __future__ import annotations

import json
import os
import sys

from exporter import environment
from exporter.cli.app import error_record
from exporter.errors import ExporterError


def main() -> None:
    environment.die_with_parent()  # a kill -9 of verify takes this process with it
    environment.idle_threads_sleep()  # before torch loads, also when a library caller started this worker
    from exporter.quality.verify import parity_answer

    request = json.loads(sys.stdin.read())
    saved = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr; stdout carries only the answer
    try:
        answer = parity_answer(request)
    except ExporterError as exc:
        answer = {"fatal": error_record(exc)}
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
    sys.stdout.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
