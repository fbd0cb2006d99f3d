"""Reboots and live patches: what an update needs, what policy allows
(decide), the bootloader's saved entry, and the steps around a reboot.
"""
