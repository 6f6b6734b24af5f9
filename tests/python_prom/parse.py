"""Parse Prometheus text exposition (stdin) with prometheus_client's parser
and print what it found as JSON: {family: {"type": T, "samples": [[name,
{label: value}, value-as-text], ...]}}. A malformed input makes the parser
raise, and this script exit non-zero."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    if f.name in families:
        sys.exit(f"family {f.name} appears twice")
    families[f.name] = {
        "type": f.type,
        "samples": [[s.name, s.labels, repr(s.value)] for s in f.samples],
    }
json.dump(families, sys.stdout)
