"""Prometheus metrics, kept in plain dicts and rendered in the text exposition format at GET /metrics.

Counters and histograms are updated on the event loop (no locks); values that live elsewhere (circuit
states, the ledger's queue and its writer thread's counts, the process's own figures) are read at scrape
time through callbacks. Labels are alias, target, outcome and status only: never a key, a key id or
anything a client typed, so cardinality stays bounded and no secret can reach a label.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


@dataclass
class _Family:
    kind: str
    help: str
    values: dict[Labels, float] = field(default_factory=lambda: defaultdict(float))
    histograms: dict[Labels, Histogram] = field(default_factory=dict)


Gauge = Callable[[], Iterable[tuple[Labels, float]]]


class CounterSeries:
    """One labelled series of a counter family (`Metrics.counter_series`); the family is made at the first
    `inc`, as `Metrics.inc` would make it."""

    __slots__ = ("_help", "_key", "_metrics", "_name", "_values")

    def __init__(self, metrics: Metrics, name: str, help: str, key: Labels) -> None:
        self._metrics, self._name, self._help, self._key = metrics, name, help, key
        self._values: dict[Labels, float] | None = None

    def inc(self, amount: float = 1.0) -> None:
        values = self._values
        if values is None:
            values = self._values = self._metrics._family(self._name, "counter", self._help).values
        values[self._key] += amount


class HistogramSeries:
    """One labelled series of a histogram family (`Metrics.histogram_series`), made at the first `observe`."""

    __slots__ = ("_help", "_histogram", "_key", "_metrics", "_name")

    def __init__(self, metrics: Metrics, name: str, help: str, key: Labels) -> None:
        self._metrics, self._name, self._help, self._key = metrics, name, help, key
        self._histogram: Histogram | None = None

    def observe(self, value: float) -> None:
        histogram = self._histogram
        if histogram is None:
            histograms = self._metrics._family(self._name, "histogram", self._help).histograms
            histogram = histograms.get(self._key)
            if histogram is None:
                histogram = histograms[self._key] = Histogram()
            self._histogram = histogram
        histogram.observe(value)


class Metrics:
    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._gauges: dict[str, tuple[str, Gauge]] = {}
        self._read_counters: dict[str, tuple[str, Gauge]] = {}
        #: unlabelled values kept by an owner (a gateway) and read at scrape time, added up over the owners
        #: alive — a gateway a reload replaced keeps counting until it closes: name → kind, help, readers
        self._owned: dict[str, tuple[str, str, dict[object, Callable[[], float]]]] = {}
        #: what the counters of closed owners had counted, so that a reload never sets a counter back
        self._retired: dict[str, float] = defaultdict(float)

    def _family(self, name: str, kind: str, help: str) -> _Family:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(kind, help)
        return family

    def inc(self, name: str, help: str, amount: float = 1.0, **labels: str) -> None:
        self._family(name, "counter", help).values[tuple(sorted(labels.items()))] += amount

    def observe(self, name: str, help: str, value: float, **labels: str) -> None:
        family = self._family(name, "histogram", help)
        key = tuple(sorted(labels.items()))
        histogram = family.histograms.get(key)
        if histogram is None:
            histogram = family.histograms[key] = Histogram()
        histogram.observe(value)

    def counter_series(self, name: str, help: str, **labels: str) -> CounterSeries:
        """One labelled series of a counter, for a caller that counts it often: `inc` on it is `inc` here
        without the family and label lookups. Nothing is shown until it is first counted."""
        return CounterSeries(self, name, help, tuple(sorted(labels.items())))

    def histogram_series(self, name: str, help: str, **labels: str) -> HistogramSeries:
        """One labelled series of a histogram, as `counter_series` is of a counter."""
        return HistogramSeries(self, name, help, tuple(sorted(labels.items())))

    def gauge(self, name: str, help: str, read: Gauge) -> None:
        self._gauges[name] = (help, read)

    def counter(self, name: str, help: str, read: Gauge) -> None:
        """A counter kept elsewhere (the process's CPU time), read at scrape time."""
        self._read_counters[name] = (help, read)

    def owned(self, name: str, kind: str, help: str, owner: object, read: Callable[[], float]) -> None:
        """An unlabelled counter or gauge that `owner` keeps, summed with the same value of other owners."""
        self._owned.setdefault(name, (kind, help, {}))[2][owner] = read

    def retire(self, owner: object) -> None:
        """`owner` is closed: its counters' last values stay counted, its gauges go."""
        for name, (kind, _, readers) in self._owned.items():
            read = readers.pop(owner, None)
            if read is not None and kind == "counter":
                self._retired[name] += read()

    def render(self) -> str:
        return render_families([((), self.collect())])

    def collect(self) -> list[Family]:
        """Every family with its samples, as render() writes them (histograms as _bucket, _sum, _count)."""
        families: list[Family] = []
        for name, family in sorted(self._families.items()):
            samples: list[Sample] = [(name, labels, value) for labels, value in sorted(family.values.items())]
            for labels, hist in sorted(family.histograms.items()):
                cumulative = 0
                for bound, count in zip((*hist.buckets, float("inf")), hist.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else _number(bound)
                    samples.append((f"{name}_bucket", (*labels, ("le", le)), cumulative))
                samples.append((f"{name}_sum", labels, hist.total))
                samples.append((f"{name}_count", labels, hist.n))
            families.append((name, family.kind, family.help, samples))
        for kind, readings in (("gauge", self._gauges), ("counter", self._read_counters)):
            for name, (help, read) in sorted(readings.items()):
                families.append((name, kind, help, [(name, labels, value) for labels, value in read()]))
        for name, (kind, help, readers) in sorted(self._owned.items()):
            total = self._retired.get(name, 0.0) + sum(read() for read in list(readers.values()))
            families.append((name, kind, help, [(name, (), total)]))
        return families


#: one line of the exposition: the sample's name (a histogram's carries its suffix), its labels, its value
Sample = tuple[str, Labels, float]
#: name, kind, help, samples
Family = tuple[str, str, str, list[Sample]]


def render_families(sources: list[tuple[Labels, list[Family]]]) -> str:
    """The text exposition of families from several sources (the workers of `serve --workers`), each source's
    samples with its own labels first; a family's HELP and TYPE are written once, its samples together."""
    order: list[str] = []
    heads: dict[str, tuple[str, str]] = {}
    samples: dict[str, list[str]] = {}
    for extra, families in sources:
        for name, kind, help, rows in families:
            if name not in heads:
                order.append(name)
                heads[name] = (kind, help)
                samples[name] = []
            samples[name].extend(
                f"{sample}{_labels((*extra, *labels))} {_number(value)}" for sample, labels, value in rows
            )
    lines: list[str] = []
    for name in order:
        kind, help = heads[name]
        lines.append(f"# HELP {name} {help}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples[name])
    return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
