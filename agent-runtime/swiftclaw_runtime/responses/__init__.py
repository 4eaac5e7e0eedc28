"""``POST /v1/responses``: OpenAI's Responses API, served through the chat pipeline.

A request is translated into one chat request (:mod:`.request`), answered by the same
pipeline and dispatcher as ``/v1/chat/completions``, and the answer translated back into
a ``response`` object or its stream of events (:mod:`.output`). ``previous_response_id``
reads the conversation from the runtime's own store (:mod:`.store`).
"""
