"""Local database and cluster servers for development and tests, started from wheels (no docker).

Each helper starts its server bound to 127.0.0.1 on a free port, as a context manager that stops it
on exit, so a test run never leaves a server behind. Production deployments point facefind at
servers they already run instead (docs/DEPLOY.md).
"""
