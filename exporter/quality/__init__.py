"""Is a variant faithful and fast: parity metrics and gates, verify, bench, report, recommend."""
