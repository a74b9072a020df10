"""The routing part of the tenant YAML that the routing tests apply."""

# Line numbers below are counted in this text: keep them in step when editing it.
ACME = """\
tenant: acme
name: Acme Corp
providers:
  - name: main
    kind: mock
  - name: backup
    kind: mock
models:
  - name: smart
    strategy: weighted
    retries: 2
    timeout_s: 60
    deployments:
      - {provider: main, model: gpt-4o, weight: 3}
      - {provider: backup, model: gpt-4o}
    fallbacks: [cheap]
    context_window_fallbacks: [long]
    split: {model: smart-v2, percent: 10, sticky: user}
    cooldown: {failures: 5, window_s: 60, cooldown_s: 12.5}
  - name: smart-v2
    deployments:
      - {provider: main, model: gpt-4.1}
  - name: cheap
    deployments:
      - {provider: backup, model: gpt-4o-mini}
  - name: long
    deployments:
      - {provider: main, model: gpt-4.1-long}
rules:
  - if: {tags: [batch]}
    route: cheap
  - if: {prompt_bytes_over: 200000}
    route: long
  - if: {key: ci, metadata: {team: ml}, user: [u1, u2]}
    route: cheap
"""
