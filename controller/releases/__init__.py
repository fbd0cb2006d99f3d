"""Agent releases: signing and verifying release manifests, publishing a
signed agent package to the controller, and storing it by content.
"""
