"""The GitHub workflows, which cannot run here: each checked against GitHub's schema, offline.

check-jsonschema carries the schema (SchemaStore's github-workflow.json) inside its package,
so no network is needed. The real-Windows job's steps live in packaging/ scripts; what can run
here of them is tested in tests/test_session_check.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))


def check_workflows(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
         "vendor.github-workflows", *map(str, files)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_every_workflow_matches_the_github_workflow_schema():
    """Every file in .github/workflows/ passes GitHub's workflow schema."""
    assert WORKFLOWS, "no workflows found"
    result = check_workflows(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_job_without_runs_on(tmp_path):
    """A job misspelling runs-on fails the check, naming the file (the check can fail)."""
    broken = tmp_path / "broken.yml"
    broken.write_text("name: broken\non: push\njobs:\n  build:\n    runs_on: windows-latest\n"
                      "    steps:\n      - run: echo hi\n", encoding="utf-8")
    result = check_workflows(broken)
    assert result.returncode != 0
    assert "broken.yml" in result.stdout + result.stderr


def test_windows_job_steps_are_scripts_in_packaging():
    """The real-Windows job runs packaging/windows-ci.ps1, which runs the session check."""
    workflow = (ROOT / ".github" / "workflows" / "windows-exe.yml").read_text(encoding="utf-8")
    assert "runs-on: windows-latest" in workflow
    assert "./packaging/windows-ci.ps1 build" in workflow
    assert "./packaging/windows-ci.ps1 session" in workflow
    script = (ROOT / "packaging" / "windows-ci.ps1").read_text(encoding="utf-8")
    assert "python packaging/session_check.py --exe" in script
    assert (ROOT / "packaging" / "session_check.py").is_file()
