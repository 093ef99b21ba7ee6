"""The yardstick for benchmarks/bench_pages.py: an empty Streamlit page with a file uploader that shows the
uploaded image nine times. Whatever imgsim's pages cost beyond this is imgsim's own.

With `?chart=plotly` it also draws a three-point Plotly chart: what any page with a Plotly chart pays
(the chart's front-end code, fetched and compiled by a new browser context), for comparison; with
`?chart=vega` a three-point st.line_chart (Vega-Lite, Streamlit's own charts).

    .venv/bin/streamlit run benchmarks/reference_app.py
"""

import streamlit as st

st.set_page_config(page_title="reference", layout="wide")
st.title("Reference")
if st.query_params.get("chart") == "plotly":
    import plotly.graph_objects as go

    st.plotly_chart(go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 3, 2], mode="markers")), key="chart")
elif st.query_params.get("chart") == "vega":
    st.line_chart({"y": [1, 3, 2]})
uploaded = st.file_uploader("Image", type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"])
if uploaded is not None:
    data = uploaded.getvalue()
    with st.container(key="results"):
        for row in range(3):
            for column in st.columns(3):
                column.image(data, width="stretch")
