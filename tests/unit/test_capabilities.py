"""Capabilities probed from a cluster's own commands, the queries built from them, and what each
supported Slurm version's recorded output parses to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurmflow.backends.slurm_cli import SlurmCLI
from slurmflow.errors import SlurmError
from slurmflow.slurm import text as st
from slurmflow.slurm.capabilities import (
    SACCT_REQUIRED,
    SQUEUE_FIELDS_2205,
    SQUEUE_REQUIRED,
    Capabilities,
    parse_long_options,
    parse_version,
)
from slurmflow.slurm.runner import FunctionRunner

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
VERSIONS = ("22.05", "24.11", "26.05")


def recorded(version: str, name: str) -> str:
    return (FIXTURES / version / name).read_text()


def probe_outputs(version: str) -> dict[str, str | None]:
    """What the probe's four commands printed on a real cluster of that version."""
    squeue = FIXTURES / version / "squeue_helpformat.txt"
    return {
        "version": recorded(version, "version.txt"),
        "sacct_help": recorded(version, "sacct_helpformat.txt"),
        # 22.05's squeue has no --helpFormat: the recorded file holds its error.
        "squeue_help": squeue.read_text() if "unrecognized option" not in squeue.read_text() else None,
        "sbatch_help": recorded(version, "sbatch_help.txt"),
    }


def caps_of(version: str) -> Capabilities:
    out = probe_outputs(version)
    return Capabilities.from_outputs(
        version=str(out["version"]),
        sacct_help=str(out["sacct_help"]),
        squeue_help=out["squeue_help"],
        sbatch_help=str(out["sbatch_help"]),
    )


def test_version_parsing() -> None:
    assert parse_version("slurm-wlm 24.11.5") == (24, 11, 5)
    assert parse_version("slurm 22.05.8\n") == (22, 5, 8)
    assert parse_version("26.05") == (26, 5, 0)
    assert parse_version("garbage") == (0, 0, 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_recorded_probe_of_each_version(version: str) -> None:
    caps = caps_of(version)
    assert caps.version.startswith(version + ".")
    assert set(SACCT_REQUIRED) <= caps.sacct_fields
    # sacct's Restarts exists only since 24.11: asking 22.05 for it fails the whole query.
    assert ("Restarts" in caps.sacct_query_fields()) == (version != "22.05")
    # squeue's RestartCnt is asked for everywhere: the restart count comes from the controller.
    assert caps.squeue_query_fields() == (*SQUEUE_REQUIRED, "RestartCnt")
    assert caps.has_sbatch_option("array") and caps.has_sbatch_option("dependency")
    assert caps.creates_output_dirs == (version != "22.05")
    assert caps.rejects_unknown_dependency == (version != "22.05")


def test_22_05_squeue_has_no_helpformat_so_its_fields_are_known() -> None:
    assert caps_of("22.05").squeue_fields == SQUEUE_FIELDS_2205


def test_an_unknown_newer_version_gets_the_newest_behaviour() -> None:
    caps = Capabilities("27.11.0", frozenset(SACCT_REQUIRED), frozenset(SQUEUE_REQUIRED), frozenset())
    assert caps.creates_output_dirs and caps.rejects_unknown_dependency
    assert caps.sacct_query_fields() == SACCT_REQUIRED  # only what its sacct lists
    assert Capabilities.from_dict(json.loads(json.dumps(caps.to_dict()))) == caps


def test_long_options_from_help() -> None:
    text = "  -a, --array=indexes   job array\n      --kill-on-invalid-dep=<yes|no>\n  see also --open-mode.\n"
    assert parse_long_options(text) == {"array", "kill-on-invalid-dep", "open-mode"}


@pytest.mark.parametrize("version", VERSIONS)
def test_array_with_a_failed_task_parses_on_each_version(version: str) -> None:
    caps = caps_of(version)
    sacct = st.parse_sacct(recorded(version, "sacct_array_fail.txt"), caps.sacct_query_fields())
    squeue = st.parse_squeue(recorded(version, "squeue_array_fail.txt"), caps.squeue_query_fields())
    merged = {j.job_id: j for j in st.merge_views(squeue, sacct)}
    failed = [j for j in merged.values() if j.array_task_id == 2]
    assert len(failed) == 1 and failed[0].state.name == "FAILED" and failed[0].exit_code not in (None, 0)
    others = [j for j in merged.values() if j.array_job_id == failed[0].array_job_id and j.array_task_id != 2]
    assert len(others) == 3 and all(j.state.name == "COMPLETED" for j in others)
    assert all(j.restarts == 0 for j in merged.values() if j.array_job_id == failed[0].array_job_id)


@pytest.mark.parametrize("version", VERSIONS)
def test_requeued_job_restart_count_on_each_version(version: str) -> None:
    caps = caps_of(version)
    (controller,) = st.parse_squeue(recorded(version, "squeue_requeued.txt"), caps.squeue_query_fields())
    assert controller.restarts is not None and controller.restarts >= 1
    accounting = st.parse_sacct(recorded(version, "sacct_requeued.txt"), caps.sacct_query_fields())
    (merged,) = st.merge_views([controller], [a for a in accounting if a.job_id == controller.job_id])
    assert merged.restarts == controller.restarts  # 22.05: only the controller knows it


def test_22_05_launch_failure_is_failed_with_signal_53() -> None:
    caps = caps_of("22.05")
    (acct,) = st.parse_sacct(recorded("22.05", "sacct_launch_failed.txt"), caps.sacct_query_fields())
    assert acct.state.name == "FAILED" and (acct.exit_code, acct.signal) == (0, 53)
    (ctl,) = st.parse_squeue(recorded("22.05", "squeue_launch_failed.txt"), caps.squeue_query_fields())
    assert ctl.reason == "JobLaunchFailure"


def test_bad_sacct_field_error_is_recorded_as_sacct_prints_it() -> None:
    assert "Invalid field requested" in recorded("22.05", "sacct_bad_field.err")


def test_a_rejected_field_makes_the_backend_probe_again(tmp_path: Path) -> None:
    """A run cached the 24.11 probe; the cluster was downgraded (or the cache is stale): the first
    query fails on `Restarts`, the backend probes again, rewrites the cache and asks again."""
    old, now = caps_of("24.11"), caps_of("22.05")
    cache = tmp_path / "capabilities.json"
    cache.write_text(json.dumps(old.to_dict()))
    outputs = probe_outputs("22.05")

    def handler(argv: tuple[str, ...], stdin: str | None) -> tuple[int, str, str]:
        if argv[:2] == ("sbatch", "--version"):
            return 0, str(outputs["version"]), ""
        if argv[:2] == ("sacct", "--helpformat"):
            return 0, str(outputs["sacct_help"]), ""
        if argv[:2] == ("squeue", "--helpFormat"):
            return 1, "", "squeue: unrecognized option '--helpFormat'\n"
        if argv[:2] == ("sbatch", "--help"):
            return 0, str(outputs["sbatch_help"]), ""
        if argv[0] == "sacct":
            if any("Restarts" in a for a in argv):
                return 1, "", 'sacct: error: Invalid field requested: "Restarts"\n'
            return 0, "", ""
        return 0, "", ""

    runner = FunctionRunner(handler)
    backend = SlurmCLI(runner, capabilities_cache=cache)
    assert backend.query(["5"]).jobs == ()
    assert backend.capabilities() == now
    assert Capabilities.from_dict(json.loads(cache.read_text())) == now
    sacct_calls = [c for c in runner.calls if c[0] == "sacct" and c[1] != "--helpformat"]
    assert len(sacct_calls) == 2 and "Restarts" not in sacct_calls[-1][4]


def test_other_query_errors_are_not_retried() -> None:
    def handler(argv: tuple[str, ...], stdin: str | None) -> tuple[int, str, str]:
        return 1, "", "squeue: error: something else\n"

    backend = SlurmCLI(FunctionRunner(handler), capabilities=caps_of("24.11"))
    with pytest.raises(SlurmError, match="something else"):
        backend.query(["5"])
