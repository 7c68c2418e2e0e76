"""
Brokers: what carries publications between the processes of one application.

L{scserver.brokers.memory.MemoryBroker} (the default) serves one process.
"""
