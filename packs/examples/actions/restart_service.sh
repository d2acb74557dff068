#!/usr/bin/env bash
# An example for action aliases ("restart nginx on web1"): it only says what it would do.
# Parameters come in a 0400 dotenv file whose values are single-quoted: sourcing it is safe.
set -euo pipefail
# shellcheck disable=SC1090
. "$ATTUNE_PARAMETERS_FILE"
printf 'would restart %s on %s (this example changes nothing)\n' "$service" "$host"
