"""The relay that agents and viewers connect out to: pairs, authenticates, forwards, records."""
