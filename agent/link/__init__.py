"""The agent's link to the controller: the mTLS client, enrollment,
check-ins with back-off, progress reports, and the signing keys it trusts.
"""
