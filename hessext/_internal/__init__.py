"""Private cross-cutting helpers, one copy of each rule (layer 0, beside hessext.ops).

- ``guard``: the user's model comes back exactly as it was (``preserved``), and the checks a
  model must pass before any work (``check_model``).
- ``params``: which parameters a method differentiates, flattening and unflattening them,
  counting them, and detached working copies in a dtype.
- ``contract``: the one input/loss contract (data pairs and mini-batches, one loss per example).
- ``progress``: the one progress bar.
- ``memory``: large fresh buffers and the memory available for them.

Nothing here imports another part of hessext except hessext.ops' neighbours at layer 0.
"""
