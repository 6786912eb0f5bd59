"""A small shop API whose background work is tested with the `tasks_recorder` fixture."""
