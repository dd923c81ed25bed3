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
    assert "lifeline_latency_seconds_sum{alias=\"chat\"} 7.03" in text
    assert "# TYPE lifeline_queue gauge" in text and "lifeline_queue 3" in text
