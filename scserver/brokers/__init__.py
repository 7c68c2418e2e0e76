"""
Brokers: what carries publications between the processes of one application.

L{scserver.brokers.memory.MemoryBroker} (the default) serves one process;
L{scserver.brokers.redis.RedisBroker} connects processes and hosts through
Redis pub/sub, sharded over one or more Redis servers.
"""
