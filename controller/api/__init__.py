"""The gRPC surface: the server and its listeners, the servicers (thin
shells over the core), peer authentication, and protobuf conversion.
"""
