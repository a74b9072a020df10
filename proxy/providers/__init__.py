from __future__ import annotations

from proxy.providers.base import ProviderAdapter


def adapter_for(kind: str) -> ProviderAdapter:
    return _ADAPTERS[kind]


def _registry() -> dict[str, ProviderAdapter]:
    from proxy.providers.anthropic import AnthropicAdapter
    from proxy.providers.azure import AzureAdapter
    from proxy.providers.bedrock import BedrockAdapter
    from proxy.providers.gemini import GeminiAdapter
    from proxy.providers.mock import MockAdapter
    from proxy.providers.openai import OpenAIAdapter

    openai = OpenAIAdapter()
    return {
        "openai": openai,
        "openai-compatible": openai,
        "mock": MockAdapter(),
        "anthropic": AnthropicAdapter(),
        "azure": AzureAdapter(),
        "gemini": GeminiAdapter(),
        "bedrock": BedrockAdapter(),
    }


_ADAPTERS = _registry()
