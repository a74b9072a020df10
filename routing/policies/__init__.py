"""Data policies: what personal data may leave for a provider (`pii:`) and the exact prompt cache
(`cache:`). The policies are stored on Tenant and VirtualKey; everything else about them is here:

- spec.py: the grammar, checked with field paths (and line numbers in the YAML) and normalized;
- detectors.py, engine.py, restore.py: the PII engine, pure functions of a normalized policy;
- services.py, forms.py, views.py, apis.py: writing policies from the console and the API;
- declarative.py: the YAML sections.

The proxy runs compiled policies as pipeline steps (proxy.steps.pii, proxy.steps.cache).
"""
