"""The virtual waiting room: a fair queue per event, metered admission, and admission tokens."""
