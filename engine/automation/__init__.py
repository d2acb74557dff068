"""The event-driven half: ``Trigger -> Event -> Rule -> Enforcement -> Execution``.

An event (a webhook POST, a timer tick) is recorded first; then every enabled rule of its
trigger is considered (only its own rule, for a rule timer's tick): conditions checked,
``action_params`` rendered from the event, an enforcement recorded (one per rule and event, a
unique key), and an execution submitted that links it.

The modules, by what they hold:

- :mod:`~engine.automation.service`: :class:`Automation`, the facade the runtime builds;
- :mod:`~engine.automation.models`: the API's request models (Attune's);
- :mod:`~engine.automation.records`: the typed records and the repository Protocol (SQL:
  :mod:`engine.storage.automation`);
- :mod:`~engine.automation.triggers`, :mod:`~engine.automation.rules`: made over the API or
  from packs;
- :mod:`~engine.automation.events`: events and enforcements recorded and listed;
- :mod:`~engine.automation.enforcement`: an event's rules run (with
  :mod:`~engine.automation.key_templates` and :mod:`~engine.automation.rule_secrets`);
- :mod:`~engine.automation.webhooks` (HMAC, replays, rate limits) and
  :mod:`~engine.automation.timers` (with :mod:`~engine.automation.schedules`): what makes
  events.

The facade itself is imported from :mod:`engine.automation.service` (this package's
``__init__`` stays light: storage imports the records from here).
"""

from engine.automation.models import (
    ENFORCEMENT_STATUS,
    STATUS_FILTER,
    Patch,
    RuleSpec,
    RuleUpdate,
    TriggerSpec,
    TriggerUpdate,
)
from engine.automation.schedules import next_fire
from engine.automation.webhooks import RateLimiter

__all__ = [
    "ENFORCEMENT_STATUS",
    "STATUS_FILTER",
    "Patch",
    "RateLimiter",
    "RuleSpec",
    "RuleUpdate",
    "TriggerSpec",
    "TriggerUpdate",
    "next_fire",
]
