"""The dashboard's charts as Vega-Lite specs, drawn by `st.vega_lite_chart` with the Vega code Streamlit ships.

Not Plotly: a page's first Plotly chart makes a new browser tab fetch and compile Streamlit's 4.7 MB
PlotlyChart bundle, and Plotly's JSON encoding was most of the Explore page's server CPU (the profile in
benchmarks/pages-results.txt); docs/results.md has the pages measured since. Specs are plain dicts: no figure object to
build, validate or serialise per view. Names reach Vega as data, drawn as text (tooltips are escaped by
vega-tooltip), never as markup, so a user's group name or label goes in as typed.
"""

from __future__ import annotations

GREY = "#c8c8c8"  # points whose label is unsure
MAP_HEIGHT = 560
PICKED, BOX = "picked", "box"  # the map's selections: points clicked (shift adds), a box dragged


def scatter_map(by: str, order: list[str], points: int, grey: str | None = None, title: str = "group") -> dict:
    """The collection's map: one circle per image at (x, y), coloured by the column `by` in `order` (`grey`: grey),
    its file in the tooltip.

    Click a point (shift-click adds more) or drag a box: the selection comes back as PICKED (each point's
    `row`) and BOX (the x and y ranges). The data holds x, y, row, file and the `by` column.
    """
    domain = [name for name in order if name != grey]
    colour = {"field": by, "type": "nominal", "title": None, "legend": {"symbolLimit": 100},
              "scale": {"domain": domain, "scheme": "tableau10" if len(domain) <= 10 else "tableau20"}}
    if grey is not None:  # its points grey, and out of the legend (the toggle's help says so)
        colour = {"condition": {"test": {"field": by, "equal": grey}, "value": GREY}, **colour}
    return {
        "height": MAP_HEIGHT,
        "mark": {"type": "circle", "size": 45 if points < 5000 else 12, "opacity": 0.85},
        "params": [{"name": PICKED, "select": {"type": "point", "fields": ["row"]}},
                   {"name": BOX, "select": {"type": "interval", "encodings": ["x", "y"]}}],
        "encoding": {
            "x": {"field": "x", "type": "quantitative", "axis": None, "scale": {"zero": False, "nice": False}},
            "y": {"field": "y", "type": "quantitative", "axis": None, "scale": {"zero": False, "nice": False}},
            "color": colour,
            "opacity": {"condition": {"param": PICKED, "empty": True, "value": 0.85}, "value": 0.3},
            "tooltip": [{"field": "file", "type": "nominal", "title": "file"},
                        {"field": by, "type": "nominal", "title": title}],
        },
        "config": {"view": {"stroke": None}},
    }


def line(x: str, y: str, x_title: str, y_title: str, height: int = 280, rule_at: float | None = None,
         rule_text: str = "", integer_x: bool = False) -> dict:
    """A line with its points; a dotted vertical rule at `rule_at`, labelled `rule_text`, when given."""
    axis = {"title": x_title, **({"format": "d", "tickMinStep": 1} if integer_x else {})}
    layers = [{"mark": {"type": "line", "point": True},
               "encoding": {"x": {"field": x, "type": "quantitative", "axis": axis, "scale": {"zero": False}},
                            "y": {"field": y, "type": "quantitative", "title": y_title, "scale": {"zero": False}}}}]
    if rule_at is not None:
        layers.append({"mark": {"type": "rule", "strokeDash": [3, 3], "color": "#555"},
                       "encoding": {"x": {"datum": rule_at, "type": "quantitative"}}})
        layers.append({"mark": {"type": "text", "align": "left", "dx": 4, "dy": -4, "baseline": "bottom",
                                "color": "#555"},
                       "encoding": {"x": {"datum": rule_at, "type": "quantitative"}, "y": {"value": 12},
                                    "text": {"value": rule_text}}})
    return {"height": height, "layer": layers}


def panels(order: list[str], series: list[str], colours: list[str], width: int = 330, height: int = 150) -> dict:
    """One small line chart per panel, two a row, each with its own y scale, whole epochs on x.

    The data is long: `panel`, `series`, `epoch`, `value`. `series` and `colours` give the legend's order and colours.
    """
    return {
        "facet": {"field": "panel", "type": "nominal", "sort": order, "title": None,
                  "header": {"labelFontSize": 14, "labelColor": "#31333f"}},
        "columns": 2,
        "spec": {
            "width": width, "height": height,
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "epoch", "type": "quantitative", "title": "epoch",
                      "axis": {"format": "d", "tickMinStep": 1}, "scale": {"zero": False}},
                "y": {"field": "value", "type": "quantitative", "title": None, "scale": {"zero": False}},
                "color": {"field": "series", "type": "nominal", "title": None,
                          "scale": {"domain": series, "range": colours}, "legend": {"orient": "top"}},
                "tooltip": [{"field": "panel", "type": "nominal"}, {"field": "series", "type": "nominal"},
                            {"field": "epoch", "type": "quantitative"},
                            {"field": "value", "type": "quantitative", "format": ".4g"}],
            },
        },
        "resolve": {"scale": {"y": "independent"}},
    }
