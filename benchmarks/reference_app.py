"""The yardstick for benchmarks/bench_pages.py: an empty Streamlit page with a file uploader that shows the
uploaded image nine times. Whatever imgsim's pages cost beyond this is imgsim's own.

    .venv/bin/streamlit run benchmarks/reference_app.py
"""

import streamlit as st

st.set_page_config(page_title="reference", layout="wide")
st.title("Reference")
uploaded = st.file_uploader("Image", type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"])
if uploaded is not None:
    data = uploaded.getvalue()
    with st.container(key="results"):
        for row in range(3):
            for column in st.columns(3):
                column.image(data, width="stretch")
