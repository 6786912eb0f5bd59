"""Example applications built with fastapi-tasks, each with its own test suite."""
