"""What the `pytest11` entry point `fastapi_tasks` names: it only loads the plugin module.

The entry point names this module, not `fastapi_tasks_testing.plugin`, so that a project can also
load the plugin by its module name while pytest autoloads plugins (`-p fastapi_tasks_testing.plugin`,
`pytest_plugins = ["fastapi_tasks_testing.plugin"]`): pytest registers a module under one name only,
and stops with "Plugin already registered under a different name" when one module is loaded under
two. Here the plugin module has one name, its own, whichever way it is loaded first, and
`-p no:fastapi_tasks` still turns the autoloaded plugin off.
"""

pytest_plugins = ["fastapi_tasks_testing.plugin"]
