"""Where studies live: the storage (a journal file or a database), the journal itself, and the
one door to Optuna's private names."""
