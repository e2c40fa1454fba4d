"""The dashboard's pages (run by ``app.py`` through ``st.navigation``) and their helpers."""
