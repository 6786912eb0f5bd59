# The plugin is disabled as an entry point in addopts (`-p no:fastapi_tasks`) and loaded here
# instead, after pytest-cov has started, so that its module is measured too.
pytest_plugins = ["fastapi_tasks_testing.plugin"]
