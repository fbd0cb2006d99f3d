"""Campaigns at run time: the engine that drives the pure rules of
`controller.campaigns` at each check-in, result and tick, the work orders it
signs, and the full recount that checks its kept counts.
"""
