from __future__ import annotations

from lifeline.metrics import Metrics


def test_counters_histograms_and_gauges_render_in_prometheus_text_format() -> None:
    m = Metrics()
    m.inc("lifeline_requests_total", "Requests.", alias="chat", status="200")
    m.inc("lifeline_requests_total", "Requests.", alias="chat", status="200")
    m.inc("lifeline_requests_total", "Requests.", alias='we"ird\nname', status="502")
    m.observe("lifeline_latency_seconds", "Latency.", 0.03, alias="chat")
    m.observe("lifeline_latency_seconds", "Latency.", 7.0, alias="chat")
    m.gauge("lifeline_queue", "Queue.", lambda: [((), 3.0)])
    text = m.render()
    assert "# TYPE lifeline_requests_total counter" in text
    assert 'lifeline_requests_total{alias="chat",status="200"} 2' in text
    assert 'lifeline_requests_total{alias="we\\"ird\\nname",status="502"} 1' in text
    assert 'lifeline_latency_seconds_bucket{alias="chat",le="0.025"} 0' in text
    assert 'lifeline_latency_seconds_bucket{alias="chat",le="0.05"} 1' in text
    assert 'lifeline_latency_seconds_bucket{alias="chat",le="+Inf"} 2' in text
    assert 'lifeline_latency_seconds_count{alias="chat"} 2' in text
    assert 'lifeline_latency_seconds_sum{alias="chat"} 7.03' in text
    assert "# TYPE lifeline_queue gauge" in text and "lifeline_queue 3" in text


def test_counters_read_at_scrape_time_render_as_counters() -> None:
    m = Metrics()
    m.counter("process_cpu_seconds_total", "CPU.", lambda: [((), 1.5)])
    text = m.render()
    assert "# TYPE process_cpu_seconds_total counter" in text and "process_cpu_seconds_total 1.5" in text


def test_owned_values_add_up_over_owners_and_a_retired_owner_never_sets_a_counter_back() -> None:
    m = Metrics()
    old, new = object(), object()
    written = {old: 5, new: 0}
    in_flight = {old: 2, new: 1}
    for owner in (old, new):
        m.owned("lifeline_ledger_written_total", "counter", "Written.", owner, lambda o=owner: written[o])
        m.owned("lifeline_requests_in_flight", "gauge", "In flight.", owner, lambda o=owner: in_flight[o])
    text = m.render()
    assert "# TYPE lifeline_ledger_written_total counter" in text and "lifeline_ledger_written_total 5" in text
    assert "# TYPE lifeline_requests_in_flight gauge" in text and "lifeline_requests_in_flight 3" in text
    written[old], written[new] = 7, 2  # the replaced gateway drains its ledger, the new one writes
    m.retire(old)
    written[old] = 100  # read no more once retired
    text = m.render()
    assert "lifeline_ledger_written_total 9" in text  # 7 retired + 2 live
    assert "lifeline_requests_in_flight 1" in text  # a retired gauge goes


def test_a_series_looked_up_once_counts_as_inc_and_observe_do_and_shows_nothing_before_it_counts() -> None:
    by_name, by_series = Metrics(), Metrics()
    counter = by_series.counter_series("lifeline_requests_total", "Requests.", status="200", alias="chat")
    histogram = by_series.histogram_series("lifeline_latency_seconds", "Latency.", alias="chat")
    assert by_series.render() == Metrics().render()  # no family, no sample until counted
    for value in (0.03, 7.0):
        by_name.inc("lifeline_requests_total", "Requests.", alias="chat", status="200")
        by_name.observe("lifeline_latency_seconds", "Latency.", value, alias="chat")
        counter.inc()
        histogram.observe(value)
    by_name.inc("lifeline_requests_total", "Requests.", 3, alias="chat", status="200")
    counter.inc(3)
    assert by_series.render() == by_name.render()
    # the same series whichever way it is counted
    by_series.inc("lifeline_requests_total", "Requests.", alias="chat", status="200")
    assert 'lifeline_requests_total{alias="chat",status="200"} 6' in by_series.render()
