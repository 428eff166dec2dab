agent_prefix "" { policy = "read" }
event_prefix "deploy" { policy = "write" }
query_prefix "" { policy = "read" }
session_prefix "" { policy = "write" }
agent "n1" { policy = "write" }
