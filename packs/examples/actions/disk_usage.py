#!/usr/bin/env python3
"""Disk usage of one path, printed as JSON (``output_format: json`` parses it into data)."""

import json
import shutil
import sys

params = json.load(sys.stdin)
usage = shutil.disk_usage(params["path"])
print(
    json.dumps(
        {
            "path": params["path"],
            "total": usage.total,
            "used": usage.used,
            "free": usage.free,
            "used_percent": round(100 * usage.used / usage.total, 1),
        }
    )
)
