"""Test-only helpers: a local S3 server (moto) and a fault-injecting TCP proxy in front of it.

Nothing here is imported by vcube itself; both servers bind to 127.0.0.1 only.
"""
