"""Prometheus metrics of the controller (issue 16; README "Metrics").

instruments  what happens, counted as it happens: check-ins and their
             latency, store batches, results, halts, time to verify
presence     hosts by ring, region and status, and how many reported
             lately, kept as hosts change
collector    the campaigns' and the hosts' kept counts, read at scrape
listener     the HTTP listener of its own, off unless configured
"""
