"""``python -m tracker_api`` / ``tracker-api``: serve the API with uvicorn."""

from __future__ import annotations

import logging
import logging.config
import os
import sys
import tempfile
from typing import Any

import uvicorn

from .config import ConfigError, get_settings
from .db import make_engine

logger = logging.getLogger("tracker_api")


def logging_config(level: str) -> dict[str, Any]:
    """One line per notable event: time, level, logger, process, message."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {"format": "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"}
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {"uvicorn.access": {"level": "WARNING"}},
    }


def main() -> None:
    try:
        settings = get_settings()
        make_engine(settings.database_url).dispose()  # a bad URL or driver fails here
    except ConfigError as error:
        sys.stderr.write(f"tracker-api: invalid configuration: {error}\n")
        raise SystemExit(2) from None
    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    if settings.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers write their metrics here so /metrics on any worker shows the total.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tracker-metrics-")
    logger.info(
        "serving on http://%s:%s with %d worker(s)", settings.host, settings.port, settings.workers
    )
    uvicorn.run(
        "tracker_api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=log_config,  # applied again in every worker process
        server_header=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
