"""A report with every kind of section, its figures computed from a small results dict, and an answer that
tries to inject markup everywhere a text from data can go."""

from __future__ import annotations

from typing import Any

from lifeline.reports import Bar, Bars, Distribution, HeatMap, Pair, Report, SideBySide, Table, Text, Tile

#: markup an answer may hold; every rendering must show it as text
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=1"> | *bold* [link](http://e.x)'


def results() -> dict[str, Any]:
    latencies = {"openai": [0.21, 0.25, 0.3, 0.32, 0.41, 0.5, 1.9], "qwen-local": [0.8, 0.9, 1.1, 1.2, 1.4, 2.2]}
    outcomes = {"qwen-local": {"win": 12, "tie": 5, "loss": 3}, "deepseek": {"win": 7, "tie": 6, "loss": 7}}
    refusals = {
        "en": {"tiananmen-1989": 0.1, "taiwan-status": 0.4},
        "zh": {"tiananmen-1989": 0.9, "taiwan-status": None},
    }
    return {"latency_seconds": latencies, "outcomes": outcomes, "refusal_rate": refusals, "items": 20}


def every_section(data: dict[str, Any] | None = None) -> Report:
    data = data or results()
    latencies: dict[str, list[float]] = data["latency_seconds"]
    outcomes: dict[str, dict[str, int]] = data["outcomes"]
    refusals: dict[str, dict[str, float | None]] = data["refusal_rate"]
    topics = sorted({t for row in refusals.values() for t in row})
    wins = {name: o["win"] / sum(o.values()) for name, o in outcomes.items()}
    return Report(
        "Every section " + HOSTILE,
        subtitle="a subtitle " + HOSTILE,
        facts=[("Items", str(data["items"])), ("Answer", HOSTILE)],
        tiles=[Tile("items", str(data["items"])), Tile("bad " + HOSTILE, "1", alarm=True)],
        sections=[
            Text("A paragraph " + HOSTILE + "\n\nA second paragraph.", heading="Text " + HOSTILE),
            Table(
                ["candidate", "median latency (s)", "note"],
                [[name, sorted(v)[len(v) // 2], HOSTILE] for name, v in latencies.items()] + [["none", None, ""]],
                caption="caption " + HOSTILE,
                heading="Table",
            ),
            Bars(
                "Win rate",
                [
                    Bar(name, wins[name], low=max(0.0, wins[name] - 0.1), high=min(1.0, wins[name] + 0.1))
                    for name in wins
                ],
                unit="share",
                max_value=1.0,
                caption="Share of items won, with an interval.",
            ),
            Bars(
                "Outcomes " + HOSTILE,
                [
                    Bar(name + HOSTILE, float(sum(o.values())), parts={k: float(v) for k, v in o.items()})
                    for name, o in outcomes.items()
                ],
                unit="items",
            ),
            Distribution("Latency", {**latencies, "empty": []}, unit="s", caption="Latency of every request."),
            SideBySide(
                "Answers",
                [
                    Pair("item 1 " + HOSTILE, "openai", "Forty-two.\n```\ncode\n```", "qwen-local " + HOSTILE, HOSTILE),
                    Pair("item 2", "openai", "word " * 600, "qwen-local", "a" * 3000),
                ],
                caption="Two answers to the same prompt.",
            ),
            HeatMap(
                "Refusal rate " + HOSTILE,
                list(refusals),
                topics,
                [[refusals[lang].get(t) for t in topics] for lang in refusals],
                unit="share",
                low=0.0,
                high=1.0,
            ),
        ],
        data=data,
    )
