"""Development tools: the demo, the simulator, `check`, embedded servers, supervised processes.

The fleet runtime (the rest of `orderfleet.worker`) imports none of them, except the embedded
servers, which `worker/servers.py` loads when no server URL is configured. Importing this package
loads nothing else.
"""
