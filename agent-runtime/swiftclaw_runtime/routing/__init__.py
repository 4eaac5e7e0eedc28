"""Which tier serves a request: the client's explicit choice, or the complexity classifier."""

from .tiers import AUTO, Route, Router, model_ids, resolve_embeddings_model

__all__ = ["AUTO", "Route", "Router", "model_ids", "resolve_embeddings_model"]
