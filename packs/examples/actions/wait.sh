#!/usr/bin/env bash
seconds=$(python3 -c 'import json,sys; print(int(json.load(sys.stdin)["seconds"]))')
echo "waiting ${seconds} s"
sleep "${seconds}"
echo "done"
