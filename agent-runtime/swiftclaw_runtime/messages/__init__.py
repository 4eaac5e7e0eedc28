"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API,
served through the chat pipeline by any tier.

A request is translated into one chat request (:mod:`.request`, the inverse of the
upstream translation in :mod:`..providers.translate_anthropic`, whose tables it shares;
Anthropic's own features travel as the chat request's extensions, see
:mod:`..providers.extensions`), answered by the same pipeline and dispatcher as
``/v1/chat/completions``, and the answer translated back into a ``message`` or its stream
of events (:mod:`.output`). Errors are in Anthropic's shape (:mod:`.errors`).
"""
