"""Integrations with training frameworks: each module imports its framework, nothing here does.

`hpsearch.integrations.lightning`: a Lightning Trainer that reports each epoch to its trial and
stops cleanly when the trial is pruned or diverges (`pip install 'hpsearch[lightning]'`).
"""
