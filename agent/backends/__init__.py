"""Package managers behind one interface: apt and dnf, the installed
package list, and the one module every subprocess call goes through.
"""
