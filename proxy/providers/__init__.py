from __future__ import annotations

from proxy.providers.base import ProviderAdapter


def adapter_for(kind: str) -> ProviderAdapter:
    return _ADAPTERS[kind]


def _registry() -> dict[str, ProviderAdapter]:
    from proxy.providers.mock import MockAdapter
    from proxy.providers.openai import OpenAIAdapter

    openai = OpenAIAdapter()
    return {"openai": openai, "openai-compatible": openai, "mock": MockAdapter()}


_ADAPTERS = _registry()
