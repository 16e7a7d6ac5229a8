"""What crosses a service boundary besides events: the request and reply of every RPC, the read
models the services hand each other, the vocabulary of a generation's status, and a typed
client per service.

- ``status``: ``GenerationStatus``, the terminal set and the event → status map.
- ``records``: the shared read models (generation, image, board, ledger line, balance, page).
- ``rpc``: ``Rpc`` (one request/reply call: subject, request model, reply model) and the
  request base class.
- ``billing`` / ``gallery``: the models and the ``Rpc`` of every ``rpc.billing.*`` and
  ``rpc.gallery.*`` call; the handlers are typed against them, the clients call them.
- ``clients``: ``BillingClient`` and ``GalleryClient``, one method per call.
"""
