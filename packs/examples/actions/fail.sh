#!/usr/bin/env bash
# Reads {"code": N} on stdin and exits with it.
code=$(python3 -c 'import json,sys; print(int(json.load(sys.stdin)["code"]))')
echo "something went wrong (exit ${code})" >&2
exit "${code}"
