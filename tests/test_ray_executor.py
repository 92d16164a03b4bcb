"""The Ray executor: same records as the local executor, on a local Ray with 2 CPUs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mgas_bench.config import expand_suite, parse_suite
from mgas_bench.ray_executor import INSTALL_COMMAND
from mgas_bench.records import read_record, run_dir
from mgas_bench.runner import run_suite

# What a run computes; times and memory differ between any two executions.
COMPUTED = ("test_accuracy", "params_m", "params_nonzero_m", "macs_m")


def test_ray_executor_records_equal_the_local_executors(registry, tmp_path):
    pytest.importorskip("ray")
    from mgas_bench.ray_executor import run_suite_on_ray

    suite = parse_suite(
        {
            "methods": ["darts", "mg-darts"],  # mg-darts: an architecture with a tensor file
            "seeds": 1,
            "budget": "smoke",
            "search": {"max_steps_per_epoch": 2},
            "eval": {"epochs": 1},
        }
    )
    configs = expand_suite(suite, registry)
    local = run_suite(configs, tmp_path / "local", registry, isolate=True, threads=1)
    on_ray = run_suite_on_ray(configs, tmp_path / "ray", threads=1, num_cpus=2)
    assert len(local.completed) == len(on_ray.completed) == 2 and not on_ray.failed

    for config in configs:
        ours, theirs = (run_dir(tmp_path / where, config) for where in ("ray", "local"))
        record, expected = read_record(ours), read_record(theirs)
        assert record["status"] == expected["status"] == "ok"
        assert record["config"] == expected["config"]
        for metric in COMPUTED:
            assert record["metrics"][metric] == expected["metrics"][metric], metric
        architecture = json.loads((ours / "architecture.json").read_text())
        assert architecture == json.loads((theirs / "architecture.json").read_text())
        assert (ours / "log.txt").exists() and (ours / "metrics.jsonl").exists()

    # Completed runs are skipped, as with the local executor.
    again = run_suite_on_ray(configs, tmp_path / "ray", threads=1, num_cpus=2)
    assert len(again.skipped) == 2 and not again.completed


def test_without_ray_the_ray_executor_says_how_to_install_it(tmp_path):
    blocked = (
        "import sys; sys.modules['ray'] = None; from mgas_bench.cli import main; "
        "main(['run', '--budget', 'smoke', '--methods', 'darts', '--seeds', '1', "
        "'--executor', 'ray'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode != 0
    assert f"Ray is not installed; install it with: {INSTALL_COMMAND}" in done.stderr
    assert not (tmp_path / "results" / "runs").exists()  # refused before anything ran
