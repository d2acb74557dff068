"""The execution page names a retry's chain and a pending retry (engine/retries.py)."""

from __future__ import annotations

from engine.api.page_views import origin_facts
from tests.ui.test_page_views import T0, _record


def test_a_retry_links_the_first_run_of_its_chain() -> None:
    retry = _record(original_execution=4, retry_count=2, retry_reason="timeout")
    facts = {f.label: (f.value, f.href) for f in origin_facts(retry, None)}
    assert facts["Retry 2 of"] == ("execution #4, after timeout", "4")
    assert "Retry" not in facts


def test_an_ended_run_with_a_pending_retry_says_so() -> None:
    ended = _record(status="timeout", retry_due_at=T0)
    facts = {f.label: f.value for f in origin_facts(ended, None)}
    assert facts["Retry"] == "pending: cancel this execution to call it off"
    assert not any(label.startswith("Retry ") for label in facts)


def test_a_first_run_says_nothing_of_retries() -> None:
    assert not any(f.label.startswith("Retry") for f in origin_facts(_record(), None))
