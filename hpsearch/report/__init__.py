"""Reports: plots.py (matplotlib PNGs) and html.py (the self-contained study report)."""
