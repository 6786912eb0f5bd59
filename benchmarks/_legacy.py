"""fastapi-tasks 0.1.0, fetched at benchmark time and imported as `fastapi_tasks_010`.

It has the same import name as this project, so its package directory is copied under another
name. Its code is never committed here.
"""

from __future__ import annotations

import glob
import importlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from types import ModuleType

__all__ = ["LEGACY_NAME", "load_legacy"]

LEGACY_NAME = "fastapi_tasks_010"
_VERSION = "0.1.0"


def load_legacy(tmpdir: str) -> tuple[ModuleType | None, str]:
    """Download the 0.1.0 wheel into `tmpdir` and import it; return (module or None, a note)."""
    download = os.path.join(tmpdir, "download")
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"fastapi-tasks=={_VERSION}", "--no-deps", "-d", download, "-q"],
            check=True,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return (
            None,
            f"fastapi-tasks {_VERSION} could not be downloaded ({detail.strip().splitlines()[-1:]}); rows skipped",
        )
    wheels = glob.glob(os.path.join(download, f"fastapi_tasks-{_VERSION}-*.whl"))
    if not wheels:
        return None, f"pip download gave no fastapi-tasks {_VERSION} wheel; rows skipped"
    target = os.path.join(tmpdir, "legacy")
    package_dir = os.path.join(target, LEGACY_NAME)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(package_dir)
    with zipfile.ZipFile(wheels[0]) as wheel:
        for member in wheel.namelist():
            if not member.startswith("fastapi_tasks/") or member.endswith("/"):
                continue
            data = wheel.read(member)
            if member.endswith(".py"):
                # Its imports are relative today; rewrite absolute ones too, should there be any.
                text = re.sub(r"\bfastapi_tasks\b(?=[.\s])", LEGACY_NAME, data.decode())
                data = text.encode()
            with open(os.path.join(package_dir, member.removeprefix("fastapi_tasks/")), "wb") as out:
                out.write(data)
    sys.path.insert(0, target)
    try:
        module = importlib.import_module(LEGACY_NAME)
    except Exception as exc:
        return None, f"fastapi-tasks {_VERSION} did not import ({type(exc).__name__}: {exc}); rows skipped"
    return module, f"fastapi-tasks {_VERSION} from its PyPI wheel, imported as {LEGACY_NAME}"
