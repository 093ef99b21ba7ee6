"""imgsim dashboard: `streamlit run app.py`. Page config and navigation; the pages live in pages/."""

import streamlit as st

from imgsim.core import threads
from imgsim.core.access import Access

threads.serving()  # once a process, however it was started (imgsim serve, streamlit run app.py): imgsim.core.threads
st.set_page_config(page_title="imgsim", page_icon=":material/image_search:", layout="wide")

pages = [
    st.Page("pages/search.py", title="Search", icon=":material/search:", default=True),
    st.Page("pages/explore.py", title="Explore", icon=":material/scatter_plot:"),
    st.Page("pages/label.py", title="Label", icon=":material/label:"),
    st.Page("pages/duplicates.py", title="Duplicates", icon=":material/content_copy:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
]
if Access.from_env(st.get_option("server.address")).readonly:
    pages = pages[:-1]  # read-only: no page that exists only to change things
st.navigation(pages).run()
