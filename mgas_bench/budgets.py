"""Named budget presets: how long to search and evaluate, and at what network size.

Every method in a run gets the same budget, which is what makes a leaderboard
row comparable with its neighbours.
"""

from __future__ import annotations

from typing import Any

BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    # One digits run in well under a minute: for tests and "does it work" checks.
    "smoke": {
        "search": {
            "epochs": 1,
            "batch_size": 64,
            "cells": 3,
            "channels": 4,
            "max_steps_per_epoch": 4,
        },
        "eval": {"epochs": 3, "batch_size": 64, "layers": 3, "channels": 8},
    },
    # The default suite: every method x 2 seeds on digits in a few minutes on 2 cores.
    "small": {
        "search": {"epochs": 4, "batch_size": 96, "cells": 3, "channels": 4},
        "eval": {"epochs": 15, "batch_size": 96, "layers": 5, "channels": 12, "cutout": 2},
    },
    # A longer CPU budget for digits, when minutes are cheap.
    "medium": {
        "search": {"epochs": 20, "batch_size": 64, "cells": 5, "channels": 8},
        "eval": {"epochs": 60, "batch_size": 64, "layers": 8, "channels": 16, "cutout": 2},
    },
    # The DARTS paper's CIFAR-10 protocol (a GPU budget).
    "paper": {
        "search": {"epochs": 50, "batch_size": 64, "cells": 8, "channels": 16},
        "eval": {
            "epochs": 600,
            "batch_size": 96,
            "layers": 20,
            "channels": 36,
            "auxiliary": True,
            "drop_path": 0.2,
            "cutout": 16,
        },
    },
}
