"""Data policies compiled into proxy pipeline steps (proxy.steps.Step): PII and secret scanning
(pii.py, detectors.py, restore.py) and the exact prompt cache (cache.py)."""
