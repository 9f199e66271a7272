"""The lifecycle of a search: its stages, the coordinator of each and its parts, refine, final."""
