"""The blinded reader study: storage (db), what readers and the lead can do (service), the rubric,
statistics (stats) and exports (export)."""
