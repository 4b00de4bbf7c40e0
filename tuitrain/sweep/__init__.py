"""``tuitrain sweep``: run the variants of an experiment (presets x grids) as ordinary ``tuitrain run``
children writing into one sweep folder, described by its manifest (:mod:`tuitrain.sweep.manifest`).
Nothing here imports torch or textual at module level: the CLI imports these lazily."""
