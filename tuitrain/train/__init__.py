"""The training side of tuitrain: models, data, the engine. Imports torch; never imports textual."""
