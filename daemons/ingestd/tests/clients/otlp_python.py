"""Sends one log record and two metrics to ingestd with the OpenTelemetry Python SDK and its
OTLP/HTTP exporters (PyPI opentelemetry-exporter-otlp-proto-http), then flushes.

Usage: otlp_python.py http://127.0.0.1:PORT
Exit status 0 when both flushes report success.
"""

import logging
import sys

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource


def main() -> int:
    base = sys.argv[1].rstrip("/")
    resource = Resource.create({"service.name": "pyapp", "host.name": "pyhost"})

    logs = LoggerProvider(resource=resource)
    logs.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{base}/v1/logs", timeout=10))
    )
    log = logging.getLogger("rookery-test")
    log.propagate = False
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logs))
    log.setLevel(logging.INFO)
    log.warning("cache miss ratio high", extra={"cache": "sessions"})
    ok_logs = logs.force_flush()
    logs.shutdown()

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=10),
        export_interval_millis=60_000,
    )
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meters.get_meter("rookery-test")
    meter.create_counter("jobs.done").add(5, {"queue": "q1"})
    meter.create_gauge("temperature").set(21.5, {"room": "lab"})
    ok_metrics = meters.force_flush()
    meters.shutdown()
    print(f"logs flushed: {ok_logs}, metrics flushed: {ok_metrics}")
    return 0 if ok_logs and ok_metrics else 1


if __name__ == "__main__":
    sys.exit(main())
