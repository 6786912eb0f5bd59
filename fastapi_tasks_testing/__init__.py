"""Testing toolkit for fastapi-tasks."""
