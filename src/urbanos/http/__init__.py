"""The HTTP binding (clause 6): parse, call a service, render. No SQL, no JSON-LD algorithms."""
