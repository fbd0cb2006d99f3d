"""Helpers shared by the test suites: real processes, real packages, real hosts.

- `controller`: a real controller process and the project's CLIs.
- `sandbox`: `HostSandbox`, a throwaway copy-on-write copy of this machine
  (overlayfs over `/` in private namespaces) for real apt/dpkg and agent runs.
- `debrepo`: real `.deb` packages built with `dpkg-deb` and a local flat apt
  repository a sandbox can use instead of the network.
"""
