"""HTTP plumbing beneath the routes: connection limits, the checks before a body is read, security headers, metrics, bounded uploads."""
