"""The meterid dashboard: where reviewers work. Run it with `meterid dashboard` (Streamlit on
127.0.0.1). Each page is a script in ``views/`` (runnable and testable on its own; not named
``pages/``, which Streamlit would list by itself) that reads the project's outputs through
``meterid.dashboard.data`` and acts through the library calls the CLI uses; this file only
lays the pages out.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "views"
# (script, title, URL path); the first opens by default.
LAYOUT = (("review.py", "Review", "review"),
          ("results.py", "Nightly results", "results"),
          ("identify.py", "Identify", "identify"),
          ("clusters.py", "Clusters", "clusters"),
          ("model.py", "Model", "model"),
          ("dataset.py", "Data", "data"),
          ("retrain.py", "Retrain", "retrain"))


def main() -> None:
    st.set_page_config(page_title="meterid", layout="wide")
    pages = [st.Page(PAGES / script, title=title, url_path=url, default=index == 0)
             for index, (script, title, url) in enumerate(LAYOUT)]
    st.navigation(pages, position="top").run()


# Streamlit runs this file as __main__; a worker process that re-imports it (spawn,
# forkserver) sees __mp_main__ and must not start the app.
if __name__ == "__main__":
    main()
