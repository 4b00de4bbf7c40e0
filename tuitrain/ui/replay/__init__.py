"""Replay and comparison: the dashboard fed from run files.

* :mod:`~tuitrain.ui.replay.compare` - what a comparison shows: metric names, run names and colours,
  the final table (pure; no textual, no h5py);
* :mod:`~tuitrain.ui.replay.cursor` - the time cursor's arithmetic (pure);
* :mod:`~tuitrain.ui.replay.file_source` - a :class:`~tuitrain.ui.source.Source` that reads a run file:
  a decimated overview for the widgets, exact per-step lookups for the cursor, SWMR follow;
* :mod:`~tuitrain.ui.replay.launch` - builds the app for ``tuitrain replay``.

Importing this package imports nothing: the CLI validates ``--metric`` without loading textual.
"""
