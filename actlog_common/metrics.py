"""One description per Prometheus metric, for the service that serves it and for the docs.

Each service declares its metrics as a table of `MetricSpec`s; it builds its prometheus_client
objects from the table, and the documentation's metrics page is generated from the same
tables, so a metric cannot be served undocumented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    name: str  # without the `_total` prometheus_client adds to counters
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: Sequence[float] | None = None

    @property
    def scraped_name(self) -> str:
        """The name a scrape shows (counters end in `_total`)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name

    def family(self, value: float | None = None) -> CounterMetricFamily | GaugeMetricFamily:
        """A family for a custom collector: with `value`, one unlabelled sample; without,
        empty, for `add_metric` per label values."""
        cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}[self.kind]
        if value is not None:
            return cls(self.name, self.help, value=value)
        return cls(self.name, self.help, labels=list(self.labels))

    def register(self, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
        """The prometheus_client metric of this spec, in `registry`."""
        if self.kind == "histogram":
            buckets = self.buckets or Histogram.DEFAULT_BUCKETS
            return Histogram(self.name, self.help, self.labels, buckets=buckets, registry=registry)
        cls = {"counter": Counter, "gauge": Gauge}[self.kind]
        return cls(self.name, self.help, self.labels, registry=registry)
