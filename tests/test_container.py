"""The container files, read statically (issue 12, "Failing to start or stop").

These run without a Docker daemon: ``.dockerignore`` is applied with Docker's own rules
(moby's patternmatcher: last matching pattern wins, a pattern that matches a parent folder
matches what is inside it) to the repository's files and to the private files a developer's
checkout holds; the Dockerfile must install dependencies from ``pyproject.toml`` before it
copies the source; ``docker-compose.yml`` must give every Attune service a restart policy and
a health check that fits its role, and pass the Slack settings to the API.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import Settings

ROOT = Path(__file__).resolve().parents[1]
#: What the image needs from the context (the Dockerfile's COPY sources).
NEEDED_PREFIXES = ("bot/", "config/", "engine/", "packs/")
NEEDED_FILES = ("pyproject.toml", "README.md")
#: What a developer's checkout holds and must never reach the image.
PRIVATE = (
    ".venv/lib/python3.11/site-packages/aiohttp/__init__.py",
    ".venv/bin/python",
    "attune.db",
    "attune.db-wal",
    "attune.db-shm",
    ".attune/secret.key",
    ".attune/work/run-1/out",
    ".attune/alive/worker-1.json",
    "packs/.attune/secret.key",
    "engine/attune.db",
    "bot/__pycache__/cli.cpython-311.pyc",
    ".env",
    "packs/examples/.env",
    ".git/config",
    "attune_chatops.egg-info/PKG-INFO",
    "tests/conftest.py",
    "bench/results/run.json",
)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """One .dockerignore pattern as a regular expression (Go's filepath.Match plus ``**``)."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


@cache
def _patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclusion?, regex) per line of .dockerignore, in order."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.lstrip("!").strip().strip("/")
        line = re.sub("/+", "/", line)
        patterns.append((not negated, _pattern_regex(line)))
    return patterns


def excluded(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the build context."""
    parts = path.split("/")
    candidates = [path, *("/".join(parts[: i + 1]) for i in range(len(parts) - 1))]
    result = False
    for exclusion, regex in _patterns():
        if any(regex.match(candidate) for candidate in candidates):
            result = exclusion
    return result


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git is not available to list the repository's files")
    return [line for line in out.splitlines() if line]


def test_matcher_follows_dockers_rules() -> None:
    assert _patterns(), ".dockerignore is empty"
    assert _pattern_regex("**/*.db").match("a/b/c.db")
    assert _pattern_regex("**/*.db").match("c.db")
    assert not _pattern_regex("*").match("a/b")


@pytest.mark.parametrize("path", PRIVATE)
def test_private_and_local_files_stay_out_of_the_build_context(path: str) -> None:
    assert excluded(path), f"{path} would be sent to the Docker daemon and could reach the image"


def test_the_files_the_image_needs_are_in_the_build_context() -> None:
    tracked = _tracked_files()
    needed = [p for p in tracked if p.startswith(NEEDED_PREFIXES) or p in NEEDED_FILES]
    assert any(p.startswith("engine/storage/migrations/") for p in needed)
    missing = [p for p in needed if excluded(p)]
    assert not missing, f"left out of the build context but needed: {missing}"
    extra = [p for p in tracked if not excluded(p) and p not in needed]
    assert not extra, f"sent to the build without being used: {extra}"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_installs_dependencies_before_copying_the_source() -> None:
    steps = _instructions()
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) == 2, "a build stage and a runtime stage"
    build = steps[stages[0] : stages[1]]
    copies = [(i, args) for i, (word, args) in enumerate(build) if word == "COPY"]
    source_copies = [i for i, args in copies if re.search(r"\b(bot|engine|config)\b", args)]
    deps = [
        i
        for i, (word, args) in enumerate(build)
        if word == "RUN" and "pip wheel" in args and "requirements" in args
    ]
    assert source_copies
    assert deps
    assert max(deps) < min(source_copies), "dependencies must be built before the source is copied"
    before_deps = [args for i, args in copies if i < min(deps)]
    assert before_deps == ["pyproject.toml ./"], before_deps

    runtime = steps[stages[1] :]
    installs = [args for word, args in runtime if word == "RUN" and "pip install" in args]
    assert len(installs) == 2
    assert "/wheels/deps" in installs[0]
    assert "--no-deps" in installs[1]


def test_every_copied_source_exists_and_is_in_the_build_context() -> None:
    for word, args in _instructions():
        if word != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not excluded(source.rstrip("/")), f"{source} is excluded by .dockerignore"


def test_image_health_check_is_attune_health() -> None:
    checks = [args for word, args in _instructions() if word == "HEALTHCHECK"]
    assert len(checks) == 1
    assert 'CMD ["attune", "health"]' in checks[0]
    assert "urlopen" not in checks[0]


@cache
def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _slack_settings() -> list[str]:
    return sorted(f"ATTUNE_{name.upper()}" for name in Settings.model_fields if "slack" in name)


@pytest.mark.parametrize(
    ("service", "check"), [("api", "attune health --http"), ("worker", "attune health --worker")]
)
def test_compose_attune_services_restart_and_check_their_own_health(
    service: str, check: str
) -> None:
    spec = _compose()["services"][service]
    assert spec["restart"] in {"unless-stopped", "on-failure", "always"}
    test = spec["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert " ".join(test[1:]) == check
    for needed in ("postgres", "rabbitmq"):
        assert spec["depends_on"][needed] == {"condition": "service_healthy"}
        assert "healthcheck" in _compose()["services"][needed]
        assert _compose()["services"][needed]["restart"] in {"unless-stopped", "always"}


def test_compose_passes_every_slack_setting_to_the_api_only() -> None:
    services = _compose()["services"]
    api_env = services["api"]["environment"]
    slack = _slack_settings()
    assert "ATTUNE_SLACK_BOT_TOKEN" in slack
    assert "ATTUNE_SLACK_APP_TOKEN" in slack
    for name in slack:
        assert name in api_env, f"{name} is not passed to the API"
        # No value: taken from the shell or .env, and unset (not empty) when absent there.
        assert api_env[name] is None, f"{name}: {api_env[name]!r}"
    worker_env = services["worker"]["environment"]
    assert not [name for name in worker_env if "SLACK" in name]
    assert worker_env["ATTUNE_SECRET_KEY"] == api_env["ATTUNE_SECRET_KEY"]
