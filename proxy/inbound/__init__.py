"""Front ends: how a client's request is read and its answer written, per wire format.

Today OpenAI's (`openai.py`); Anthropic's /v1/messages joins it over the same pipeline.
"""
