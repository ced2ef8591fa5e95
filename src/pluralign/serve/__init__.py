"""``pluralign serve``: an OpenAI-compatible HTTP server that answers belief first.

- :mod:`pluralign.serve.config`: ``ServeConfig`` and the belief-set spelling;
- :mod:`pluralign.serve.engine`: belief draws and batched generation on the model;
- :mod:`pluralign.serve.batching`: the worker thread that batches concurrent requests;
- :mod:`pluralign.serve.streaming`: token streaming from a batched ``generate``;
- :mod:`pluralign.serve.protocol`: the OpenAI request and response bodies, belief fields;
- :mod:`pluralign.serve.app`: the FastAPI application (routes, API key, errors);
- :mod:`pluralign.serve.server`: loading a model, ``serve(config)``, ``running_server``.

Only the config is imported here: the rest needs torch, FastAPI and uvicorn (the
``serve`` extra).
"""

from pluralign.serve.config import API_KEY_ENV, ServeConfig, parse_belief_set

__all__ = ["API_KEY_ENV", "ServeConfig", "parse_belief_set"]
