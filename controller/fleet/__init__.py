"""Who belongs to the fleet: enrollment tokens, the certificate authority,
the campaign signing keys, and making a data dir from nothing.
"""
