#!/usr/bin/env bash
# Parameters come in a 0400 dotenv file whose values are single-quoted: sourcing it is safe,
# they are never spliced into a command line.
set -euo pipefail
# shellcheck disable=SC1090
. "$ATTUNE_PARAMETERS_FILE"
greeting="Hello, ${name}!"
if [ "${shout}" = "true" ]; then
  greeting=$(printf '%s' "$greeting" | tr '[:lower:]' '[:upper:]')
fi
printf '%s\n' "$greeting"
