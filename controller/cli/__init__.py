"""The admin CLI (`fleetpatch`): its commands, the campaign commands, shared
options and output, and the admin gRPC client.
"""
