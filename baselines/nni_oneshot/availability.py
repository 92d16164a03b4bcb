"""Whether NNI and what its strategies need can be imported, without importing them.

Importing NNI takes about ten seconds, so the plugin must not do it just to be
listed: ``mgas-bench plugins`` and every other command would pay for it.
"""

from __future__ import annotations

import importlib.util

INSTALL_COMMAND = "pip install 'mgas-bench[nni]'"

# Module name -> the distribution that provides it, for the message.
NNI_MODULES: dict[str, str] = {"nni": "nni", "pytorch_lightning": "pytorch-lightning"}
# ENAS's controller is a tianshou PPO policy acting in a gym environment.
ENAS_MODULES: dict[str, str] = {**NNI_MODULES, "tianshou": "tianshou", "gym": "gym"}


def missing_modules(modules: dict[str, str]) -> list[str]:
    return [dist for module, dist in modules.items() if not _importable(module)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # A module imported without a __spec__ makes find_spec raise ValueError.
        return False


def unavailable_reason(modules: dict[str, str]) -> str | None:
    missing = missing_modules(modules)
    if not missing:
        return None
    return f"{', '.join(missing)} not installed; install with: {INSTALL_COMMAND}"
