"""An NNI experiment whose folder, logs and manifest all stay inside one run's folder.

``NasExperiment`` keeps its folder under ``experiment_working_directory``, which we
set, but also records every experiment in ``~/nni-experiments/.experiment``: the
manifest ``nnictl`` reads. The suite's runs are not nnictl experiments, and a
benchmark must not write into the user's home, so the manifest goes next to them.
Imports NNI: load this module only when the plugin is available.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import nni.nas.experiment.experiment as nni_experiment
from nni.nas.experiment import NasExperiment
from nni.tools.nnictl.config_utils import Experiments

# The experiment's own folder is <working directory>/<id>.
EXPERIMENT_ID = "experiment"


class RunLocalExperiment(NasExperiment):
    def __init__(self, *args, working_directory: Path, **kwargs):
        super().__init__(*args, id=EXPERIMENT_ID, **kwargs)
        self.working_directory = working_directory
        self.config.experiment_working_directory = str(working_directory)

    @property
    def folder(self) -> Path:
        return self.working_directory / EXPERIMENT_ID

    @contextlib.contextmanager
    def _local_manifest(self) -> Iterator[None]:
        local = functools.partial(Experiments, home_dir=str(self.working_directory))
        with mock.patch.object(nni_experiment, "Experiments", local):
            yield

    def _start_without_nni_manager(self) -> None:
        with self._local_manifest():
            super()._start_without_nni_manager()

    def _stop_without_nni_manager(self) -> None:
        with self._local_manifest():
            super()._stop_without_nni_manager()
