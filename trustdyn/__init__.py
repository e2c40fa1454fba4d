"""trustdyn: trace trustworthiness dynamics across pre-training checkpoints and steer chat models.

The library half of the project: importable, typed and free of Streamlit. The pipeline
(``precompute``) and the dashboard (``app.py`` + ``pages/``) are thin layers over it.
"""

__version__ = "0.1.0"
